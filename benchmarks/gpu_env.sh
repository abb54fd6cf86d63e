# Sourced by the gpu_run*.sh scripts: the set-up every GPU run shares. A lent machine has torch and
# transformers but not diffusers: the wheels carried in .whl/ (diffusers, importlib_metadata) are
# installed to /tmp/site, and results go to $OUT (or ./gpu_results). Run from the repository root.
set -u -o pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:.
else
    export PYTHONPATH=.
fi
export PYTHONUNBUFFERED=1
