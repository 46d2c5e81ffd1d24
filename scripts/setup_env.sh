#!/usr/bin/env bash
# Create .venv if there is none and install what the project needs into it.
# Usage: source scripts/setup_env.sh [torch] [mindspore] [dev] [bench]
# A framework that already imports in .venv is kept, never replaced. numpy stays < 2
# (MindSpore 2.10 needs it). torch is pinned to the CPU build 2.13.0.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
want=("$@")
[ ${#want[@]} -eq 0 ] && want=(torch mindspore dev)
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
pip_install() { "$py" -m pip install --quiet --disable-pip-version-check "$@"; }
has() { "$py" -c "import $1" >/dev/null 2>&1; }
for part in "${want[@]}"; do
  case "$part" in
    torch) has torch || { echo "setup: installing torch==2.13.0 (CPU)"; pip_install "torch==2.13.0"; } ;;
    mindspore) has mindspore || { echo "setup: installing mindspore==2.10.0"; pip_install "mindspore==2.10.0" "numpy<2"; } ;;
    dev) has pytest || pip_install "pytest>=7" "hypothesis>=6" ;;
    bench) bash "$root/scripts/install_peers.sh" ;;
    *) echo "setup: unknown part '$part' (torch, mindspore, dev, bench)" >&2; exit 2 ;;
  esac
done
has yaml && has scipy && has tqdm && has matplotlib && has tokenizers && has safetensors \
  || pip_install "numpy<2" "scipy>=1.10" "pyyaml>=6" "tqdm>=4.60" "matplotlib>=3.7" "tokenizers>=0.15" "safetensors>=0.4"
"$py" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$root" >/dev/null
"$py" -c "import numpy, sys; sys.exit(0 if int(numpy.__version__.split('.')[0]) < 2 else 'numpy>=2 in .venv: MindSpore 2.10 needs numpy<2')"
