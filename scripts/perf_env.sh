# Process-start settings of glibc malloc and OpenMP, sourced by launch.sh and train.sh
# (scripts/bench/environment.py gives the benchmark's workers the same). Each is exported
# only when the caller has not set it:
# - MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=1 TiB: glibc serves blocks over its mmap
#   threshold (32 MiB at most) with a fresh mmap and unmaps them on free, so an MoE layer's
#   large intermediates page-fault anew every step (about 0.6 GB of minor faults per step of
#   the d=512, 4096-token benchmark layer, 0 with these); freed memory is reused instead.
# - OMP_WAIT_POLICY=PASSIVE: OpenMP threads sleep instead of spinning between ops; spinning
#   threads of several processes on shared cores wait for descheduled peers.
# - OMP_NUM_THREADS: the node's cores shared among its processes (perf_env PROCESSES).
perf_env() {
  local procs="${1:-1}" cores
  cores="$(nproc 2>/dev/null || echo 1)"
  export MALLOC_MMAP_MAX_="${MALLOC_MMAP_MAX_:-0}"
  export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-1099511627776}"
  export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
  if [ "$procs" -gt 1 ]; then
    local per=$((cores / procs))
    [ "$per" -ge 1 ] || per=1
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$per}"
  fi
}
