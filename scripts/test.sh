#!/usr/bin/env bash
# The test command: sets up .venv on a fresh machine, then runs the framework-free tests,
# tests/backend (written once) in one pytest process per backend (MindSpore has set-once
# global state) and the cross-backend parity tests with MindSpore in PyNative and in
# GRAPH_MODE, then the multi-process tests (torchrun and msrun launches, in two runs side by
# side), and builds the documentation site with mkdocs build --strict and checks it (tests/docs).
# Fails if any run or the build fails.
# The MindSpore backend run has the framework-free, torch and both parity runs beside it.
# Extra arguments go to every pytest run (e.g. -x, -k adamoe); a run whose tests they all
# deselect (pytest exit 5) does not count as failed, though the closing line still needs a pass.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_env.sh torch mindspore dev data hf docs || { echo "test.sh: environment setup failed"; exit 1; }
py="$root/.venv/bin/python"
reports="$(mktemp -d)"
artifacts="$(mktemp -d -t moe_routers_artifacts.XXXXXX)"  # kept: the built site's screenshots
status=0
run() {  # run NAME ENV... -- PYTEST_ARGS...
  local name="$1"; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  echo "=== $name"
  local started=$SECONDS
  env "${envs[@]}" "$py" -m pytest -q -p no:cacheprovider --junitxml="$reports/$name.xml" "$@" "${extra[@]}"
  local rc=$?
  echo "=== $name: $((SECONDS - started)) s"
  [ $rc -eq 0 ] || { [ $rc -eq 5 ] && [ ${#extra[@]} -gt 0 ]; } || status=1
}
extra=("$@")
# MindSpore's backend tests spend much of their time compiling on one core: the framework-free,
# torch and both parity runs, the device check's CPU rehearsal and the docs build (one core, niced) go
# alongside them on the other core (their output is printed when they end); the multi-process
# tests, which use both cores, come last
(
  run common   PYTHONPATH="$root" -- tests/common
  run backend_torch     PYTHONPATH="$root" MOE_TEST_BACKEND=torch -- tests/backend
  run parity_pynative PYTHONPATH="$root" MOE_MS_MODE=pynative -- tests/parity
  run parity_graph    PYTHONPATH="$root" MOE_MS_MODE=graph -- tests/parity
  echo "=== device_check --dry-run (the GPU check rehearsed on the CPU)"
  nice -n 10 bash scripts/device_check.sh --dry-run --python "$py" --out "$reports/device_check" || status=1
  echo "=== docs: mkdocs build --strict (broken links and anchors, missing pages, docstrings it cannot render)"
  started=$SECONDS
  # not --quiet: it hides the warnings that --strict turns into a failure, and the build passes
  NO_MKDOCS_2_WARNING=1 nice -n 10 "$root/.venv/bin/mkdocs" build --strict --site-dir "$reports/site" \
    > "$reports/docs.log" 2>&1 || { grep -v '^INFO' "$reports/docs.log"; status=1; }
  echo "=== docs: $((SECONDS - started)) s"
  # the built site in headless Chromium, and every shell command of the docs run or listed
  run docs_checks PYTHONPATH="$root" MOE_DOCS_SITE="$reports/site" MOE_TEST_ARTIFACTS="$artifacts" -- tests/docs
  exit $status
) > "$reports/alongside.log" 2>&1 &
alongside=$!
run backend_mindspore PYTHONPATH="$root" MOE_TEST_BACKEND=mindspore MOE_MS_MODE=pynative -- tests/backend
wait $alongside || status=1
cat "$reports/alongside.log"
# The multi-process tests in two runs side by side: a launch spends much of its time starting
# processes and waiting (collective timeouts, a killed launcher), which leaves a core idle.
# Training comparisons in one; the rest of tests/distributed, new files included, in the other
resumes=(tests/distributed/test_distributed_cases.py tests/distributed/test_distributed_resume.py
         tests/distributed/test_node_placement.py)  # the 2-node placement jobs: the lighter run
(
  run distributed_training PYTHONPATH="$root" -- "${resumes[@]}" --basetemp "$reports/tmp_training"
  exit $status
) > "$reports/distributed_training.log" 2>&1 &
training=$!
run distributed     PYTHONPATH="$root" -- tests/distributed "${resumes[@]/#/--ignore=}" --basetemp "$reports/tmp_rest"
wait $training || status=1
cat "$reports/distributed_training.log"
echo "screenshots of the built site: $artifacts"
"$py" scripts/junit_total.py "$reports"/*.xml || status=1
rm -rf "$reports" "$root"/rank_* "${TMPDIR:-/tmp}"/moe_routers_smollm2_*  # the GGUF copy tests/support/pretrained.py shares
exit $status
