#!/usr/bin/env bash
# Copy the repository's rules/ into the chart (helm/deliverability-guard/files/rules/), which
# ships them as the default rules ConfigMap. Helm cannot read files outside the chart, hence
# the copy; tests/test_helm.py fails while the two differ.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/helm/deliverability-guard/files/rules"
mkdir -p "$dest"
find "$dest" -maxdepth 1 -type f \( -name '*.yaml' -o -name '*.yml' \) -delete
find "$root/rules" -maxdepth 1 -type f \( -name '*.yaml' -o -name '*.yml' \) ! -name '.*' -exec cp {} "$dest/" \;
guard="${GUARD:-$root/.venv/bin/guard}"
if [[ -x "$guard" ]]; then
    "$guard" validate "$dest"
else
    echo "copied; not validated ($guard not found)" >&2
fi
