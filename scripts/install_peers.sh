#!/usr/bin/env bash
# Install the peer MoE implementations that scripts/bench_layer.py compares against, into
# .venv, without replacing torch 2.13.0 or numpy<2 (a constraints file pins both).
# - transformers (MixtralSparseMoeBlock), st-moe-pytorch, fairscale: ordinary installs; their
#   dependency trees (typer/pydantic/regex; einops/beartype/CoLT5-attention; none) leave
#   torch and numpy alone.
# - deepspeed: an sdist whose build imports torch, so --no-build-isolation, and --no-deps so
#   pip cannot swap torch; its runtime requirements (requirements/requirements.txt of the
#   release) are listed explicitly. DS_BUILD_OPS=0: no C++/CUDA ops are compiled.
# Each peer is optional: one that fails to install is reported on stderr and skipped (exit
# status stays 0, so `setup_env.sh ... bench` finishes its other parts), and the benchmark
# lists it as "not installed".
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$root/.venv/bin/python"
pins="$(mktemp)"
trap 'rm -f "$pins"' EXIT
"$py" - > "$pins" <<'EOF'
import numpy, torch
print(f"torch=={torch.__version__.split('+')[0]}")
print(f"numpy=={numpy.__version__}")
EOF
pip_install() { "$py" -m pip install --quiet --disable-pip-version-check -c "$pins" "$@"; }
has() { "$py" -c "import $1" >/dev/null 2>&1; }
skipped=()
want() {  # want MODULE PIP_ARGS...: install unless MODULE already imports
  local module="$1"; shift
  has "$module" && return 0
  echo "install_peers: installing $*"
  pip_install "$@" || { echo "install_peers: could not install $* (skipped)" >&2; skipped+=("$module"); }
}
want transformers "transformers==5.23.0"
want st_moe_pytorch "st-moe-pytorch==0.1.8"
want fairscale "fairscale==0.4.13"
if ! has deepspeed; then
  echo "install_peers: installing deepspeed==0.19.8 (--no-deps --no-build-isolation) and its runtime requirements"
  { pip_install einops hjson msgpack ninja psutil py-cpuinfo "pydantic>=2" "packaging>=20" tqdm \
      && DS_BUILD_OPS=0 DS_ACCELERATOR=cpu pip_install --no-deps --no-build-isolation "deepspeed==0.19.8"; } \
    || { echo "install_peers: could not install deepspeed (skipped)" >&2; skipped+=(deepspeed); }
fi
"$py" - <<'EOF'
import numpy, torch
assert int(numpy.__version__.split(".")[0]) < 2, f"numpy {numpy.__version__} in .venv: MindSpore 2.10 needs numpy<2"
print(f"install_peers: torch {torch.__version__}, numpy {numpy.__version__}")
EOF
[ $? -eq 0 ] || exit 1
[ ${#skipped[@]} -eq 0 ] || echo "install_peers: NOT installed: ${skipped[*]}" >&2
