"""The router host-state contract, framework-free: ``static_key`` of a model gathers every
MoE layer's router key (what a compiling train step watches), a router's host state
round-trips through JSON (``state_dict`` / ``load_state_dict``, as checkpoints store it), and
routers without such state report none."""
import json

import pytest

from models.lora_moe import LoRAMoEConfig, LoRAMoEModel
from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from models.routers import ROUTERS
from models.transformer import Transformer
from models.transformer_config import TransformerConfig

TOP_1 = ("switch", "hash", "rre", "skip", "balanced", "locmoe")
OPTIONS = {"hash": {"vocab_size": 8}, "rre": {"vocab_size": 8, "num_domains": 2}, "locmoe_plus": {"capacity_interval": 2}}
MEASURED = {"locmoe": "affinity_delta", "locmoe_plus": "affinity_max"}  # the aux key after_step reads


def moe(router: str) -> MoEConfig:
    return MoEConfig(d_model=16, ffn_hidden=8, num_experts=4, router=router, dispatch="capacity",
                     top_k=1 if router in TOP_1 else 2, num_null_experts=2 if router == "adamoe" else 0,
                     router_options=OPTIONS.get(router, {}))


def transformer(router: str) -> Transformer:
    return Transformer(TransformerConfig(vocab_size=8, d_model=16, num_layers=2, num_heads=2, num_kv_heads=1,
                                         ffn_hidden=16, max_seq_len=8, moe_every=1, moe=moe(router)))


@pytest.mark.parametrize("router", sorted(MEASURED))
def test_model_static_key_follows_each_layers_router(router):
    model = transformer(router)
    assert model.static_key() == tuple(layer.router.static_key() for layer in model.moe_layers)
    before = model.static_key()
    model.moe_layers[1].router.after_step({}, {MEASURED[router]: 0.3})
    after = model.static_key()
    assert after[0] == before[0] and after[1] != before[1]
    assert model.moe_layers[1].static_key() == after[1]


@pytest.mark.parametrize("router", sorted(MEASURED))
def test_router_state_round_trips_through_json(router):
    trained = MoELayer(moe(router)).router
    trained.after_step({}, {MEASURED[router]: 0.3})
    fresh = MoELayer(moe(router)).router
    assert fresh.state_dict() != trained.state_dict()
    fresh.load_state_dict(json.loads(json.dumps(trained.state_dict())))
    assert fresh.state_dict() == trained.state_dict()
    assert fresh.static_key() == trained.static_key()


@pytest.mark.parametrize("router", sorted(set(ROUTERS) - set(MEASURED)))
def test_routers_without_host_state_report_none(router):
    layer = MoELayer(moe(router))
    assert layer.router.state_dict() == {} and layer.static_key() == ()


def test_lora_moe_static_key_covers_the_base_and_every_adapter():
    base = TransformerConfig(vocab_size=8, d_model=16, num_layers=1, num_heads=2, num_kv_heads=1, ffn_hidden=16,
                             max_seq_len=8, moe_every=0)
    model = LoRAMoEModel(base, LoRAMoEConfig(rank=2, num_experts=2, top_k=1, targets=("q_proj", "v_proj")))
    assert model.static_key() == ((), ())  # a dense base, two topk adapters
