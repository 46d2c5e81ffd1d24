#!/usr/bin/env bash
# torchrun on CUDA nodes (NCCL), the same YAML config and --set overrides as one process.
# Run on every node, with the same --nnodes, --master-addr and --master-port:
#   node 0: bash scripts/run_cuda.sh --nnodes 2 --nproc-per-node 8 --node-rank 0 \
#             --master-addr 10.0.0.1 --master-port 29500 --config configs/cuda.yaml --set parallel.expert_parallel=8
#   node 1: the same with --node-rank 1
# Options: those of scripts/launch.sh (see there); the rest goes to scripts/train.py.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec bash "$root/scripts/launch.sh" --framework torch "$@"
