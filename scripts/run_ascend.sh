#!/usr/bin/env bash
# msrun on Ascend nodes (HCCL), the same YAML config and --set overrides as one process.
# Run on every node, with the same --nnodes, --master-addr and --master-port:
#   node 0: bash scripts/run_ascend.sh --nnodes 2 --nproc-per-node 8 --node-rank 0 \
#             --master-addr 10.0.0.1 --master-port 8118 --config configs/ascend.yaml --set parallel.expert_parallel=8
#   node 1: the same with --node-rank 1
# Options: those of scripts/launch.sh (see there; --log-dir holds msrun's worker_<rank>.log
# files); the rest goes to scripts/train.py. HCCL_EXEC_TIMEOUT and HCCL_CONNECT_TIMEOUT, when
# unset, follow the config's parallel.timeout_s (set before MindSpore's communication starts:
# launch/process_groups.py, mindspore_timeouts).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec bash "$root/scripts/launch.sh" --framework mindspore "$@"
