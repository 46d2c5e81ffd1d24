"""LoRA-MoE adapters on a frozen transformer, on the backend under test: before training the
logits are the base model's bit for bit (B = 0); training steps (top-k and AdaMoE routing;
a dense base and a Qwen2-MoE-shaped MoE base, with Qwen3's per-head q/k norm and 12-wide
heads, whose attention and shared expert are adapted)
move only the adapters and their routers, and leave every base parameter bit for bit
unchanged; AdaMoE tokens that pick null experts cost no adapter FLOPs."""
import numpy as np
import pytest

from backends.train_step import make_train_step
from core.errors import ConfigError
from core.params import init_params
from models.lm_objective import lm_objective
from models.lora_moe import LoRAMoEConfig, LoRAMoEModel
from models.moe_config import MoEConfig
from models.transformer import Transformer
from models.transformer_config import TransformerConfig
from tests.support.model_runs import run_forward

BASE = TransformerConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_hidden=48,
                         max_seq_len=16, init_std=0.1, moe_every=0)
MOE_BASE = TransformerConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_hidden=48,
                             max_seq_len=16, init_std=0.1, moe_every=1, qkv_bias=True, qk_norm="per_head", head_size=12,
                             moe=MoEConfig(d_model=32, ffn_hidden=16, num_experts=4, top_k=2, expert_init_std=0.1,
                                           shared_expert_hidden=24, shared_expert_gate=True))
TOKENS = np.random.default_rng(0).integers(0, 64, (4, 12)).astype(np.int32)


def train_step(runner, module):
    return make_train_step(runner.name, module, lm_objective, lr=1e-2, weight_decay=0.1)  # adapters run eagerly


@pytest.mark.parametrize("base,lora", [
    (BASE, LoRAMoEConfig(rank=4, num_experts=4, top_k=2)),
    (BASE, LoRAMoEConfig(rank=4, num_experts=4, num_null_experts=4, top_k=3, router="adamoe",
                         targets=("q_proj", "v_proj", "down_proj"), last_layers=1)),
    (MOE_BASE, LoRAMoEConfig(rank=4, num_experts=2, num_null_experts=2, top_k=2, router="adamoe"))],
    ids=["topk", "adamoe", "moe-base"])
def test_only_adapters_train_and_the_base_stays_bitwise(runner, base, lora):
    base_values = init_params(Transformer(base).param_specs(), seed=0)
    model = LoRAMoEModel(base, lora)
    if base.moe_every:  # attention and the shared expert: 7 projections per block
        assert len(model.adapters) == 7 * base.num_layers and all(".experts." not in a.prefix for a in model.adapters)
    values = {**init_params(model.param_specs(), seed=1), **base_values}
    base_logits, _ = run_forward(runner, Transformer(base), base_values, TOKENS)
    logits, aux = run_forward(runner, model, values, TOKENS)
    np.testing.assert_array_equal(logits, base_logits)
    assert 0 < aux["adapter_true_experts_per_token"] <= lora.top_k
    module = runner.module(model, values)
    step = train_step(runner, module)
    losses = [step.step((TOKENS[:, :-1],), (TOKENS[:, 1:],), 1e-2)[0] for _ in range(4)]
    assert losses[-1] < losses[0]
    after = module.numpy_params()
    for name, value in base_values.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    moved = {name for name in after if not np.array_equal(after[name], values[name])}
    assert moved == set(model.param_specs()) - set(base_values)  # every adapter and router weight moved


def test_bad_adapter_settings_are_one_line():
    with pytest.raises(ConfigError, match=r"lora.targets=\['w1'\]"):
        LoRAMoEModel(BASE, LoRAMoEConfig(targets=("w1",)))
    with pytest.raises(ConfigError, match="router 'adamoe' needs at least one null expert"):
        LoRAMoEModel(BASE, LoRAMoEConfig(router="adamoe"))
    with pytest.raises(ConfigError, match="'expert_choice' is not causal"):
        LoRAMoEModel(BASE, LoRAMoEConfig(router="expert_choice"))
