# The deliverability guard's image: `guard run`, settings from the environment.
#
# Build:  docker build -t deliverability-guard:0.1.0 .
# Runs as UID 10001 with a read-only root filesystem (the guard writes nothing; mount an
# emptyDir at /tmp). Probes are Kubernetes' (/livez, /readyz on 8080), so no HEALTHCHECK.

# ---- build: install the package and its pinned dependencies into a venv ----
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/guard \
 && /opt/guard/bin/pip install --upgrade pip==25.3

WORKDIR /src
# Dependencies first, so a code-only change reuses this layer's cache.
COPY pyproject.toml constraints.txt ./
COPY guard/ ./guard/
# The runtime dependencies only (no test extras), at the versions in constraints.txt.
RUN /opt/guard/bin/pip install -c constraints.txt . \
 && /opt/guard/bin/guard --help >/dev/null

# ---- runtime: the venv, the default rules, a non-root user ----
FROM python:3.11.14-slim-bookworm

RUN groupadd --system --gid 10001 guard \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin guard

COPY --from=build /opt/guard /opt/guard
COPY rules/ /etc/guard/rules/

# PYTHONDONTWRITEBYTECODE: no .pyc writes on a read-only root filesystem (the venv's are
# compiled at install). PYTHONUNBUFFERED: log lines leave at once.
ENV PATH=/opt/guard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GUARD_RULES=/etc/guard/rules \
    GUARD_HTTP_PORT=8080

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080

# Exec form: the guard is PID 1 and receives SIGTERM itself, which starts its drain.
ENTRYPOINT ["guard"]
CMD ["run"]
