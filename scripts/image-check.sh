#!/usr/bin/env bash
# The image proven: builds the Dockerfile with podman and runs it as the Helm chart does (read-only
# root filesystem, UID 10001, /tmp a tmpfs like the chart's emptyDir, no capabilities), then checks
# that `guard validate` passes, `guard run` runs the compiled core and pauses a bad campaign through the Leadterra stand-in and
# `guard ingest` accepts a signed webhook (scripts/image_check.py, against Tansu and the stand-in
# on 127.0.0.1). CI runs it beside `make test` (.ci/run).
#
# The base is a stand-in for the Dockerfile's pinned python:3.11-slim-bookworm, made from Debian's
# packages with mmdebstrap, because no container registry is reachable where this runs; it is
# passed as the PYTHON_IMAGE build argument, so real builds keep the pinned digest. It is cached in
# podman's storage under a tag that names its recipe: a second run reuses it and the build cache.
#
# Needs root and Debian's packages (installed with apt-get when missing). Settings:
#   IMAGE_CHECK_PYTHON  a Python with the test extra (default: .venv/bin/python, made with make if missing)
#   IMAGE_CHECK_MIRROR  Debian mirror for the stand-in base (default: http://deb.debian.org/debian)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$SECONDS
step=start
run_id="$$-$(date +%s)"
scratch=$(mktemp -d /tmp/guard-image-check.XXXXXX)

say() { printf '[image-check %4ss] %s\n' "$((SECONDS - started))" "$*"; }
begin() { step=$1; say "== $1: $2"; }

finish() {
    local code=$?
    set +e
    if command -v podman >/dev/null; then  # containers left by an interrupted check (normally none)
        podman ps --all --quiet --filter "label=guard-image-check=$run_id" | xargs --no-run-if-empty podman rm --force >/dev/null
    fi
    rm -rf "$scratch"
    if [[ $code -eq 0 ]]; then
        say "image check: OK, validate, run (the compiled core) and ingest work in the image as the chart runs it ($((SECONDS - started)) s)"
    else
        say "image check: FAILED at step '$step' (exit $code, $((SECONDS - started)) s)"
    fi
    exit "$code"
}
trap finish EXIT
trap 'exit 130' INT TERM

# ---- tools: podman with runc; mmdebstrap for the base ----
begin tools "podman, runc, mmdebstrap"
[[ $(id -u) -eq 0 ]] || { say "needs root (podman's storage, mmdebstrap, apt-get)"; exit 2; }
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v mmdebstrap >/dev/null; then
    say "installing with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$scratch/apt.log" 2>&1 &&
        apt-get install -y -qq --no-install-recommends podman runc mmdebstrap ca-certificates >>"$scratch/apt.log" 2>&1 ||
        { tail -20 "$scratch/apt.log"; exit 1; }
fi
say "$(podman --version), runc $(runc --version | sed -n '1s/runc version //p'), mmdebstrap $(mmdebstrap --version | sed 's/mmdebstrap //')"

# A private containers.conf: these machines have no systemd cgroup manager and no usable
# default ulimits, and crun is not what Debian's podman finds first.
export CONTAINERS_CONF="$scratch/containers.conf"
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF

# ---- base: python3.11 from Debian, laid out like the official image ----
# Like python:3.11-slim: `python` in /usr/local/bin, pip and setuptools importable from /usr/local
# (the Dockerfile uninstalls them), no EXTERNALLY-MANAGED marker (the official build has none).
mirror=${IMAGE_CHECK_MIRROR:-http://deb.debian.org/debian}
security_mirror=${mirror%/debian}/debian-security
packages=python3.11,python3.11-venv,ca-certificates,passwd
customize='chroot "$1" sh -ec "
for name in python python3 python3.11; do ln -sf /usr/bin/python3.11 /usr/local/bin/\$name; done
rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED
mkdir -p /usr/local/lib/python3.11/dist-packages
for wheel in /usr/share/python-wheels/pip-*.whl /usr/share/python-wheels/setuptools-*.whl; do
  python3.11 -m zipfile -e \$wheel /usr/local/lib/python3.11/dist-packages
done
python -m pip --version"'
recipe="bookworm minbase $packages $customize"
base="localhost/guard-python-standin:3.11-bookworm-$(printf '%s' "$recipe" | sha256sum | cut -c1-12)"
begin base "$base"
if podman image exists "$base"; then
    say "cached"
else
    say "mmdebstrap bookworm ($packages) from $mirror"
    # Older recipes' bases go: one cached base at a time.
    podman images --format '{{.Repository}}:{{.Tag}}' localhost/guard-python-standin |
        xargs --no-run-if-empty podman rmi --force >/dev/null 2>&1 || true
    mmdebstrap --variant=minbase --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook="$customize" \
        bookworm "$scratch/base.tar" \
        "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security_mirror bookworm-security main" \
        >"$scratch/mmdebstrap.log" 2>&1 || { tail -30 "$scratch/mmdebstrap.log"; exit 1; }
    podman import --quiet "$scratch/base.tar" "$base" >/dev/null
    rm -f "$scratch/base.tar"
    say "built and imported"
fi

# ---- image: the Dockerfile as it is, on the stand-in base ----
# pip inside RUN steps verifies PyPI with the host's CA bundle, mounted read-only for RUN steps
# only: nothing of it lands in a layer.
image=localhost/deliverability-guard:image-check
begin build "podman build -t $image (PYTHON_IMAGE=$base)"
podman build --quiet --network host --pull=never \
    --build-arg "PYTHON_IMAGE=$base" \
    --volume /etc/ssl/certs:/etc/ssl/certs:ro \
    --tag "$image" . >"$scratch/build.log" 2>&1 || { tail -40 "$scratch/build.log"; exit 1; }
say "built $(podman image inspect --format '{{.Id}}' "$image" | cut -c1-12), $(podman image inspect --format '{{.Size}}' "$image" | numfmt --to=iec)"

# ---- checks: the three commands, run as the chart runs them ----
python=${IMAGE_CHECK_PYTHON:-.venv/bin/python}
if [[ -z ${IMAGE_CHECK_PYTHON:-} && ! -e .venv/.installed ]]; then
    begin venv "make .venv/.installed (the test extra: Tansu and the Leadterra stand-in)"
    make --no-print-directory .venv/.installed >"$scratch/venv.log" 2>&1 || { tail -30 "$scratch/venv.log"; exit 1; }
fi
begin checks "validate, run, ingest"
PYTHONPATH="$root" "$python" scripts/image_check.py --image "$image" --label "guard-image-check=$run_id"
step=done
