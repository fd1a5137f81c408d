# The deliverability guard's image: `guard run`, settings from the environment.
#
# Build:  docker build -t deliverability-guard:0.1.0 .
# Runs as UID 10001 with a read-only root filesystem (the guard writes nothing; mount an
# emptyDir at /tmp). Probes are Kubernetes' (/livez, /readyz on 8080), so no HEALTHCHECK.
#
# Supply chain: the base image is pinned by digest, every Python package is installed with
# --require-hashes from docker/*.lock (`make lock` regenerates them from pyproject.toml and
# constraints.txt), wheels only (no sdist builds anything). The compiled core (core/) is built
# from source in the build stage: Debian's Rust at pinned versions, the crates of core/Cargo.lock
# (fetched once, each checked against the lock's checksum; the build itself is offline). The
# runtime image holds the venv and nothing else of the build: no compiler, no pip, no setuptools,
# no guard/testing (the stand-ins of `guard demo` and `guard standin`, which say so and exit 2 there).

# The base of both stages: one Python, so the venv's interpreter link resolves in the runtime.
# The digest is the multi-architecture index of python:3.11.14-slim-bookworm as published in
# public Dockerfiles that pin it; it was not pulled where this file was written (no registry
# there). To update: pick the new patch tag, then
#   docker buildx imagetools inspect python:3.11.N-slim-bookworm --format '{{json .Manifest.Digest}}'
# and put tag and digest here (tests/test_dockerfile.py checks the shape, not the registry).
# scripts/image-check.sh (CI) builds this file with --build-arg PYTHON_IMAGE=<a stand-in made from
# Debian's python3.11> and runs the result as the Helm chart does.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# ---- build: a venv with the locked dependencies, the compiled core and the guard's wheel ----
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The compiled core's compiler: Debian's Rust 1.85 (bookworm's rustc, 1.63, is older than PyO3
# needs; rustc-web and cargo-web are the newer one Debian keeps for bookworm, as /usr/bin/rustc and
# /usr/bin/cargo). Exact versions, the standard library's too (bookworm-security has a newer one apt
# would pick): when a point release replaces them, the build fails here and `apt-cache policy
# rustc-web` in the base names the new one. This stage only.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends \
      rustc-web=1.85.0+dfsg3-1~deb12u3 cargo-web=1.85.0+dfsg3-1~deb12u3 \
      libstd-rust-web-dev=1.85.0+dfsg3-1~deb12u3 \
 && rm -rf /var/lib/apt/lists/* \
 && cargo --version \
 && rustc --version

WORKDIR /src
# The build tools (pip, setuptools, maturin) in a venv of their own, never copied on.
COPY docker/build-requirements.lock docker/
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps --only-binary :all: -r docker/build-requirements.lock

# Dependencies first, so a code-only change reuses this layer's cache. The runtime venv has no pip:
# the build venv's pip installs into it.
COPY docker/requirements.lock docker/
RUN python -m venv --without-pip /opt/guard \
 && /opt/build/bin/pip --python /opt/guard/bin/python install \
      --require-hashes --no-deps --only-binary :all: -r docker/requirements.lock

# The compiled core: its crates fetched as core/Cargo.lock pins them (--locked: cargo checks every
# download against the lock's checksum), then a wheel built offline (--frozen) by the locked maturin,
# installed into the guard's venv, which must import it: `guard run` says engine="compiled".
COPY core/ ./core/
RUN cargo fetch --locked --manifest-path core/Cargo.toml \
 && /opt/build/bin/maturin build --release --frozen --manifest-path core/Cargo.toml \
      --interpreter /opt/guard/bin/python --out /wheels/core \
 && /opt/build/bin/pip --python /opt/guard/bin/python install --no-deps --no-index /wheels/core/*.whl \
 && /opt/guard/bin/python -c 'import guard_core'

# The guard itself: a wheel built offline with the locked setuptools, its dependencies already there.
# .dockerignore keeps guard/testing out of the context, so out of the wheel.
COPY pyproject.toml README.md ./
COPY guard/ ./guard/
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --no-index --wheel-dir /wheels/guard . \
 && /opt/build/bin/pip --python /opt/guard/bin/python install --no-deps --no-index /wheels/guard/*.whl \
 && test ! -e /opt/guard/lib/python3.11/site-packages/guard/testing \
 && /opt/guard/bin/guard --help >/dev/null

# ---- runtime: the venv (the compiled core in it), the default rules, a non-root user; no compiler ----
FROM ${PYTHON_IMAGE}

# The base image's own pip (and ensurepip's bundled copy) go too: nothing here installs packages.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
 && rm -rf /usr/local/lib/python3.11/ensurepip /usr/local/bin/pip* \
 && ! python -c 'import pip' 2>/dev/null \
 && groupadd --system --gid 10001 guard \
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
