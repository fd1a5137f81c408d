#!/usr/bin/env bash
# Regenerates the container image's hashed locks (`make lock`), with pinned pip-tools:
#   docker/requirements.lock        the runtime dependencies of pyproject.toml, at constraints.txt's versions
#   docker/build-requirements.lock  pip and setuptools for the build stage
# The Dockerfile installs both with --require-hashes: a file on PyPI that changes fails the build.
# Run after changing a dependency in pyproject.toml or constraints.txt, and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL  # hashes of PyPI's files only
tools=.tools/pip-tools
test -x "$tools/bin/pip-compile" || python3 -m venv "$tools"
"$tools/bin/pip" install --quiet --disable-pip-version-check pip==25.3 pip-tools==7.6.2
compile=("$tools/bin/pip-compile" --quiet --generate-hashes --no-emit-index-url --no-emit-find-links --no-strip-extras --newline=lf)
"${compile[@]}" --constraint constraints.txt --output-file docker/requirements.lock pyproject.toml
"${compile[@]}" --allow-unsafe --output-file docker/build-requirements.lock docker/build-requirements.in
