#!/usr/bin/env bash
# Train from a config (default configs/quickstart.yaml) on a fresh machine: sets up .venv with
# only the framework the run uses (the config's `backend:`, or --backend) plus the text data,
# then runs scripts/train.py. Extra arguments go to scripts/train.py.
#   bash scripts/train.sh                                   # quickstart on PyTorch
#   bash scripts/train.sh configs/adamoe.yaml --backend mindspore --set train.steps=200
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
config="configs/quickstart.yaml"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then config="$1"; shift; fi
[ -f "$config" ] || { echo "error: --config: no such file: '$config'" >&2; exit 2; }
backend="$(sed -n 's/^backend:[[:space:]]*\([a-z]*\).*/\1/p' "$config" | head -n 1)"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --backend) backend="${args[$((i + 1))]:-$backend}" ;;
    --backend=*) backend="${args[$i]#--backend=}" ;;
  esac
done
case "$backend" in
  torch|mindspore) ;;
  *) echo "error: backend='$backend' in $config: valid backends are torch, mindspore" >&2; exit 2 ;;
esac
bash scripts/setup_env.sh "$backend" data || { echo "train.sh: environment setup failed" >&2; exit 1; }
source "$root/scripts/perf_env.sh" && perf_env 1  # glibc malloc and OpenMP waiting
exec "$root/.venv/bin/python" scripts/train.py --config "$config" "$@"
