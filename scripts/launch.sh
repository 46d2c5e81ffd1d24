#!/usr/bin/env bash
# Launch a multi-process run on one or many nodes with the framework's own launcher:
# torchrun (torch: gloo on CPU, NCCL on CUDA, HCCL through torch_npu) or msrun (MindSpore:
# HCCL on Ascend, NCCL on GPU, its CPU backend here). Called by run_cpu.sh, run_cuda.sh and
# run_ascend.sh, which set the defaults of their device; run it on every node.
#
#   bash scripts/launch.sh [options] [--] [SCRIPT ARGS...]
#     --nnodes N            nodes in the job (default 1)
#     --nproc-per-node P    processes on this node (default 2)
#     --node-rank R         this node's index, 0..N-1 (default 0)
#     --master-addr A       address of node 0 (default 127.0.0.1)
#     --master-port PORT    port on node 0 (default 29500; 0 = a free port, one node only)
#     --log-dir DIR         the launcher's per-rank logs (default runs/launch_logs)
#     --timeout S           end the whole job after S seconds (default 0: no limit; the
#                           collectives' own timeout is the config's parallel.timeout_s)
#     --framework F         torch | mindspore; default: the train config's backend
#     --script FILE         what every process runs (default scripts/train.py)
# SCRIPT ARGS go to the script: for train.py the same --config / --set / --backend /
# --resume as a single-process run. Exit status: the job's (non-zero if any rank failed); 2
# without starting anything when the arguments are wrong or another job holds the run directory.
# Stopping: Ctrl-C, `kill PID` or `kill -INT PID` (PID: this script's, which becomes the
# launcher's) stops every rank; if the launcher is killed instead (-9, OOM), its ranks notice
# within a second and exit (docs/guide/distributed.md: Stopping a job).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
nnodes=1 nproc=2 node_rank=0 addr=127.0.0.1 port=29500 log_dir=runs/launch_logs limit=0 framework="" script="$root/scripts/train.py"
die() { echo "error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --nnodes) nnodes="${2:?--nnodes needs a value}"; shift 2 ;;
    --nproc-per-node) nproc="${2:?--nproc-per-node needs a value}"; shift 2 ;;
    --node-rank) node_rank="${2:?--node-rank needs a value}"; shift 2 ;;
    --master-addr) addr="${2:?--master-addr needs a value}"; shift 2 ;;
    --master-port) port="${2:?--master-port needs a value}"; shift 2 ;;
    --log-dir) log_dir="${2:?--log-dir needs a value}"; shift 2 ;;
    --timeout) limit="${2:?--timeout needs a value}"; shift 2 ;;
    --framework) framework="${2:?--framework needs a value}"; shift 2 ;;
    --script) script="${2:?--script needs a value}"; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
for pair in "nnodes:$nnodes" "nproc-per-node:$nproc" "timeout:$limit"; do
  [[ "${pair#*:}" =~ ^[0-9]+$ ]] || die "--${pair%%:*}=${pair#*:}: expected a whole number"
done
[ "$nnodes" -ge 1 ] && [ "$nproc" -ge 1 ] || die "--nnodes and --nproc-per-node must be at least 1"
[[ "$node_rank" =~ ^[0-9]+$ ]] && [ "$node_rank" -lt "$nnodes" ] || die "--node-rank=$node_rank: expected 0..$((nnodes - 1))"
[[ "$port" =~ ^[0-9]+$ ]] || die "--master-port=$port: expected a port number"
[ -f "$script" ] || die "--script: no such file: '$script'"
py="$root/.venv/bin/python"
[ -x "$py" ] || die "no $root/.venv: run bash scripts/setup_env.sh first"
export PATH="$root/.venv/bin:$PATH" PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" MOE_LOCAL_WORLD_SIZE="$nproc"
source "$root/scripts/perf_env.sh" && perf_env "$nproc"  # glibc malloc, OpenMP threads and waiting
if [ "$(cd "$(dirname "$script")" && pwd)/$(basename "$script")" = "$root/scripts/train.py" ]; then
  # the config's backend, after checking the world to start against it and (node 0: the other nodes would
  # find this job's own lock) that no other job holds the run directory
  backend="$(MOE_LAUNCH_WORLD=$((nnodes * nproc)) MOE_LAUNCH_NODE_RANK="$node_rank" "$py" "$root/scripts/train.py" \
             --print-backend "$@")" || exit 2
  framework="${framework:-$backend}"
fi
case "$framework" in torch|mindspore) ;; *) die "--framework=$framework: expected torch or mindspore" ;; esac
if [ "$port" = 0 ]; then
  [ "$nnodes" = 1 ] || die "--master-port 0 (a free port) works on one node only: give every node the same port"
  port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')"
elif [ "$node_rank" = 0 ]; then
  "$py" - "$addr" "$port" <<'EOF' || exit 2
import socket, sys
s = socket.socket()
try:
    s.bind(("" if sys.argv[1] in ("127.0.0.1", "localhost") else sys.argv[1], int(sys.argv[2])))
except OSError as error:
    sys.exit(f"error: --master-port {sys.argv[2]} on {sys.argv[1]} is not free ({error.strerror}); pick another port")
EOF
fi
mkdir -p "$log_dir"
if [ "$framework" = torch ]; then
  cmd=(torchrun --nnodes "$nnodes" --nproc-per-node "$nproc" --node-rank "$node_rank" --master-addr "$addr"
       --master-port "$port" --log-dir "$log_dir" --redirects 3 --tee 3 --local-ranks-filter 0 "$script" "$@")
else
  cmd=(msrun --worker_num "$((nnodes * nproc))" --local_worker_num "$nproc" --node_rank "$node_rank"
       --master_addr "$addr" --master_port "$port" --log_dir "$log_dir" --join True --cluster_time_out 120
       --tail_worker_log 0 "$script" "$@")
fi
# every rank (and msrun's scheduler) exits when this process, the launcher, is gone: killed, OOM-killed
# (launch/launcher_watch.py; torchrun and msrun start each rank in a session of its own, out of reach of a
# kill of this process group)
export MOE_LAUNCHER_PID=$$
if [ "$limit" -gt 0 ]; then
  exec timeout --kill-after 10 "$limit" "${cmd[@]}"
fi
exec "${cmd[@]}"
