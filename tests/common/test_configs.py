"""Every config in configs/ loads, validates and builds its model (routers included);
the Ascend and CUDA configs differ only in backend and device; the dense baseline matches
the quickstart MoE's active FFN FLOPs. That every registered router has its config is
tests/common/test_router_registry.py."""
from pathlib import Path

import pytest

from models.dense_baseline import ffn_flops_per_token
from models.transformer import Transformer
from training.config import config_to_dict, load_config, tokenizer_vocab, transformer_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_builds_its_model(path):
    config = load_config(path)
    model = Transformer(transformer_config(config, tokenizer_vocab(config)))
    assert model.param_specs()
    assert config.run_dir == f"runs/{path.stem}"


def test_ascend_and_cuda_differ_only_in_backend_and_device():
    ascend, cuda = (config_to_dict(load_config(CONFIGS[0].parent / f"{name}.yaml")) for name in ("ascend", "cuda"))
    differ = {key for key in ascend if ascend[key] != cuda[key]}
    assert differ == {"backend", "device", "run_dir"}
    assert (ascend["backend"], ascend["device"], cuda["backend"], cuda["device"]) == ("mindspore", "ascend", "torch", "cuda")


def test_dense_baseline_matches_quickstart_active_flops():
    folder = CONFIGS[0].parent
    moe, dense = (load_config(folder / f"{name}.yaml") for name in ("quickstart", "dense"))
    assert dense.model.moe_every == 0
    assert ffn_flops_per_token(transformer_config(dense, 4096)) == ffn_flops_per_token(transformer_config(moe, 4096))
