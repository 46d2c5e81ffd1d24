#!/usr/bin/env bash
# N local processes on this machine's CPU, either framework (torchrun + gloo, or msrun with
# MindSpore's CPU backend), the same YAML config and --set overrides as a single process:
#   bash scripts/run_cpu.sh -n 2 --config configs/quickstart.yaml --set parallel.expert_parallel=2
#   bash scripts/run_cpu.sh -n 4 --config configs/topk.yaml --backend mindspore
# -n N: processes (default 2). Every other option of scripts/launch.sh works here too
# (--master-port, --log-dir, --timeout, --script, --framework); the rest goes to train.py.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
nproc=2
if [ "${1:-}" = "-n" ]; then nproc="${2:?-n needs a value}"; shift 2; fi
exec bash "$root/scripts/launch.sh" --nnodes 1 --nproc-per-node "$nproc" --master-port "${MOE_MASTER_PORT:-0}" "$@"
