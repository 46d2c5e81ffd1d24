"""The transformer on the backend under test: causality, rotary relative positions,
grouped-query attention against plain multi-head attention and a numpy reference, the
untrained loss, the objective against numpy, the model aux, the dense baseline's FLOPs
against measured expert FLOPs, and bad inputs refused with ConfigError before compute."""
import math

import numpy as np
import pytest

from core.errors import ConfigError
from models.attention import Attention
from models.dense_baseline import dense_baseline, ffn_flops_per_token
from models.lm_objective import lm_objective
from models.moe_config import MoEConfig
from models.transformer import Transformer
from models.transformer_config import TransformerConfig
from tests.support.harness import numpy_weights, random_inputs
from tests.support.model_runs import lm_step, run_forward

VOCAB = 64


def tiny(moe_every: int = 2, router: str = "topk", **settings) -> TransformerConfig:
    moe = MoEConfig(d_model=32, ffn_hidden=24, num_experts=4, top_k=2, router=router, expert_init_std=0.1)
    base = dict(vocab_size=VOCAB, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_hidden=48,
                max_seq_len=16, init_std=0.1, moe_every=moe_every, moe=moe if moe_every else None)
    return TransformerConfig(**{**base, **settings})


def tokens_of(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, shape).astype(np.int32)


@pytest.mark.parametrize("moe_every", [0, 1], ids=["dense", "moe"])
def test_changing_a_future_token_never_changes_earlier_logits(runner, moe_every):
    model = Transformer(tiny(moe_every))
    values = numpy_weights(model, seed=0)
    tokens = tokens_of((2, 10))
    changed = tokens.copy()
    changed[1, 6] = (changed[1, 6] + 1) % VOCAB
    before, _ = run_forward(runner, model, values, tokens)
    after, _ = run_forward(runner, model, values, changed)
    np.testing.assert_allclose(after[:, :6], before[:, :6], atol=1e-5)
    np.testing.assert_allclose(after[0], before[0], atol=1e-5)
    assert np.abs(after[1, 6:] - before[1, 6:]).min(axis=-1).max() > 1e-4  # the change is seen from 6 on


def attention(num_kv_heads: int, num_heads: int = 4) -> Attention:
    return Attention(32, num_heads, num_kv_heads, rope_theta=10000.0, init_std=0.3, prefix="attn.")


def test_rotary_attention_depends_only_on_relative_position(runner):
    layer = attention(num_kv_heads=2)
    values = numpy_weights(layer, seed=1)
    x = random_inputs((2, 8, 32), seed=2)
    positions = np.arange(8, dtype=np.float32)
    base = run_forward(runner, layer, values, x, positions)
    shifted = run_forward(runner, layer, values, x, positions + 13.0)
    stretched = run_forward(runner, layer, values, x, positions * 2.0)
    np.testing.assert_allclose(shifted, base, rtol=1e-4, atol=1e-5)
    assert np.abs(stretched - base).max() > 1e-2  # positions matter, only their differences do not


def rope_numpy(x, positions, theta: float = 10000.0):
    """x [S, D]: HF 'rotate half' RoPE."""
    half = x.shape[-1] // 2
    angle = positions[:, None] * theta ** (-np.arange(half) * 2.0 / x.shape[-1])
    cos, sin = np.cos(angle), np.sin(angle)
    return np.concatenate([x[:, :half] * cos - x[:, half:] * sin, x[:, half:] * cos + x[:, :half] * sin], -1)


def multi_head_numpy(values, x, positions, heads: int):
    """Plain causal multi-head attention, one head at a time; with ``attn.sinks`` [H], head h's
    softmax denominator also holds exp(sink_h)."""
    p = "attn."
    batch, seq, d = x.shape
    dim = d // heads
    out = np.zeros((batch, seq, d))
    causal = np.tril(np.ones((seq, seq), bool))
    for b in range(batch):
        q, k, v = (x[b] @ values[p + n + "_proj.weight"].T for n in "qkv")
        for h in range(heads):
            cols = slice(h * dim, (h + 1) * dim)
            scores = rope_numpy(q[:, cols], positions) @ rope_numpy(k[:, cols], positions).T / math.sqrt(dim)
            scores = np.where(causal, scores, -np.inf)
            sink = values.get(p + "sinks", np.full(heads, -np.inf))[h]
            top = np.maximum(scores.max(-1, keepdims=True), sink)
            probs = np.exp(scores - top)
            out[b, :, cols] = (probs / (probs.sum(-1, keepdims=True) + np.exp(sink - top))) @ v[:, cols]
    return out @ values[p + "o_proj.weight"].T


def test_multi_head_attention_matches_numpy_reference(runner):
    layer = attention(num_kv_heads=4)
    values = numpy_weights(layer, seed=3)
    x = random_inputs((2, 7, 32), seed=4)
    positions = np.arange(7, dtype=np.float32)
    ours = run_forward(runner, layer, values, x, positions)
    np.testing.assert_allclose(ours, multi_head_numpy(values, x, positions, heads=4), rtol=1e-4, atol=1e-5)


def test_attention_sinks_join_each_softmax_as_a_key_without_value(runner):
    """gpt-oss's sinks: a logit per head in every query's softmax, dropped from the weights."""
    layer = Attention(32, 4, 4, rope_theta=10000.0, init_std=0.3, prefix="attn.", sinks=True)
    values = {**numpy_weights(layer, seed=3), "attn.sinks": np.array([-1.0, 0.5, 2.0, 4.0], np.float32)}
    x = random_inputs((2, 7, 32), seed=4)
    positions = np.arange(7, dtype=np.float32)
    ours = run_forward(runner, layer, values, x, positions)
    np.testing.assert_allclose(ours, multi_head_numpy(values, x, positions, heads=4), rtol=1e-4, atol=1e-5)
    plain = multi_head_numpy({k: v for k, v in values.items() if k != "attn.sinks"}, x, positions, heads=4)
    assert np.abs(ours - plain).max() > 1e-2


def test_grouped_query_equals_multi_head_with_repeated_kv_heads(runner):
    gqa = attention(num_kv_heads=2)
    values = numpy_weights(gqa, seed=5)
    repeated = dict(values)
    for name in ("attn.k_proj.weight", "attn.v_proj.weight"):  # kv head j serves query heads 2j, 2j+1
        repeated[name] = np.repeat(values[name].reshape(2, 8, 32), 2, axis=0).reshape(32, 32)
    x = random_inputs((2, 6, 32), seed=6)
    positions = np.arange(6, dtype=np.float32)
    grouped = run_forward(runner, gqa, values, x, positions)
    plain = run_forward(runner, attention(num_kv_heads=4), repeated, x, positions)
    np.testing.assert_allclose(grouped, plain, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("moe_every", [0, 1], ids=["dense", "moe"])
def test_untrained_model_loss_is_log_vocab(runner, moe_every):
    model = Transformer(tiny(moe_every, vocab_size=256, init_std=0.02, tie_embeddings=True))
    tokens = np.random.default_rng(7).integers(0, 256, (2, 13)).astype(np.int32)
    out = lm_step(runner, model, numpy_weights(model, seed=7), tokens[:, :-1], tokens[:, 1:])
    m = out["metrics"]
    assert abs(m["lm_loss"] - math.log(256)) < 0.05, m["lm_loss"]
    np.testing.assert_allclose(out["loss"], m["lm_loss"] + m["aux_loss"], rtol=1e-6)
    assert (m["aux_loss"] > 0) == bool(moe_every)


def test_objective_is_cross_entropy_over_counted_targets(runner):
    model = Transformer(tiny(1))
    values = numpy_weights(model, seed=8)
    tokens = tokens_of((2, 9), seed=8)
    targets = tokens[:, 1:].copy()
    targets[0, :3] = -1  # not counted (padding)
    out = lm_step(runner, model, values, tokens[:, :-1], targets)
    z = out["logits"].astype(np.float64)
    log_probs = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)
    counted = targets >= 0
    picked = np.take_along_axis(log_probs, np.maximum(targets, 0)[..., None], -1)[..., 0]
    np.testing.assert_allclose(out["metrics"]["lm_loss"], -picked[counted].mean(), rtol=1e-5)
    assert abs(out["metrics"]["lm_loss"] + picked.mean()) > 1e-4  # counting the padding would differ


def test_model_aux_collects_every_moe_layer(runner):
    config = tiny(1, num_layers=3)
    model = Transformer(config)
    tokens = tokens_of((2, 8), seed=9)
    _, aux = run_forward(runner, model, numpy_weights(model, seed=9), tokens)
    assert aux["tokens_per_expert"].shape == (3, 4)
    np.testing.assert_array_equal(aux["tokens_per_expert"].sum(-1), [16 * 2] * 3)  # dropless: T * k per layer
    np.testing.assert_allclose(aux["loss"], aux["layers.loss"].sum(), rtol=1e-6)
    np.testing.assert_allclose(aux["balance_loss"], aux["layers.balance_loss"].mean(), rtol=1e-6)
    assert aux["dropped_fraction"] == 0 and aux["mean_true_experts_per_token"] == 2
    assert not np.array_equal(aux["tokens_per_expert"][0], aux["tokens_per_expert"][2])  # per layer, not copies
    layer = model.layer_aux(aux, 2)
    np.testing.assert_array_equal(layer["tokens_per_expert"], aux["tokens_per_expert"][2])
    assert set(layer) == {k[len("layers."):] for k in aux if k.startswith("layers.")}
    _, dense_aux = run_forward(runner, Transformer(tiny(0)), numpy_weights(Transformer(tiny(0))), tokens)
    assert set(dense_aux) == {"loss"} and dense_aux["loss"] == 0


def test_dense_baseline_flops_equal_measured_moe_active_flops(runner):
    config = tiny(2, num_layers=4, ffn_hidden=40)
    model = Transformer(config)
    tokens = tokens_of((2, 8), seed=10)
    _, aux = run_forward(runner, model, numpy_weights(model, seed=10), tokens)
    dense_blocks = sum(2 * math.prod(s.shape) for n, s in model.param_specs().items() if ".mlp." in n)
    measured = dense_blocks + aux["expert_flops"] / tokens.size  # per token: dense blocks + experts run
    baseline = Transformer(dense_baseline(config))
    baseline_flops = sum(2 * math.prod(s.shape) for n, s in baseline.param_specs().items() if ".mlp." in n)
    assert measured == baseline_flops == ffn_flops_per_token(config)


@pytest.mark.parametrize("setting, tokens", [
    ("model.vocab_size", np.array([[1, 2, VOCAB]], np.int32)),
    ("model.vocab_size", np.array([[1, -1, 2]], np.int32)),
    ("model.max_seq_len", np.zeros((1, 17), np.int32)),
    ("integer token ids", np.zeros((1, 4), np.float32)),
    ("[batch, seq]", np.zeros((4,), np.int32)),
])
def test_bad_tokens_are_config_errors_before_compute(runner, setting, tokens):
    model = Transformer(tiny(2))
    with pytest.raises(ConfigError) as info:
        run_forward(runner, model, numpy_weights(model), tokens)
    assert setting in str(info.value) and "\n" not in str(info.value)


def test_domain_ids_of_the_wrong_shape_are_a_config_error(runner):
    model = Transformer(tiny(2))
    with pytest.raises(ConfigError, match="domain_ids"):
        run_forward(runner, model, numpy_weights(model), tokens_of((2, 5)), np.zeros((2, 4), np.int32))


def without_score_term(F, outputs, targets):
    logits, aux = outputs
    return lm_objective(F, (logits, {k: v for k, v in aux.items() if k != "routing_log_prob"}), targets)


@pytest.mark.parametrize("router", ["skip", "balanced"])
def test_stochastic_router_score_term_changes_gradients_not_the_loss(runner, router):
    moe = MoEConfig(d_model=32, ffn_hidden=24, num_experts=4, top_k=1, router=router, capacity_factor=1.0,
                    expert_init_std=0.1)
    model = Transformer(tiny(2, moe=moe))
    values = numpy_weights(model, seed=11)
    tokens = tokens_of((2, 9), seed=11)
    noise = np.random.default_rng(11).random((1, 2, 8, 2 if router == "skip" else 4), dtype=np.float32)
    args = (tokens[:, :-1], tokens[:, 1:], None, noise)
    full = lm_step(runner, model, values, *args)
    pathwise = lm_step(runner, model, values, *args, objective=without_score_term)
    np.testing.assert_allclose(full["loss"], pathwise["loss"], rtol=1e-6)
    np.testing.assert_allclose(full["loss"], full["metrics"]["lm_loss"] + full["metrics"]["aux_loss"], rtol=1e-6)
    moe_prefix = "model.layers.1.block_sparse_moe."
    for name in (moe_prefix + "experts.w_down", "lm_head.weight", "model.norm.weight"):  # after the routing
        np.testing.assert_allclose(full["grads"][name], pathwise["grads"][name], rtol=1e-5, atol=1e-7, err_msg=name)
    for name in (moe_prefix + "router.weight", "model.layers.0.mlp.up_proj.weight"):  # the routing depends on them
        assert np.abs(full["grads"][name] - pathwise["grads"][name]).max() > 1e-6, name


def test_routing_noise_of_the_wrong_shape_is_a_config_error(runner):
    moe = MoEConfig(d_model=32, ffn_hidden=24, num_experts=4, top_k=1, router="skip")
    model = Transformer(tiny(2, moe=moe))
    noise = np.zeros((2, 2, 5, 2), np.float32)  # two layers' worth for one MoE layer
    with pytest.raises(ConfigError, match="routing_noise"):
        run_forward(runner, model, numpy_weights(model), tokens_of((2, 5)), None, noise)


def test_token_ids_reach_a_hash_router(runner):
    moe = MoEConfig(d_model=32, ffn_hidden=24, num_experts=4, top_k=1, router="hash",
                    router_options={"vocab_size": VOCAB})
    model = Transformer(tiny(1, moe=moe))
    values = numpy_weights(model, seed=12)
    tokens = tokens_of((2, 8), seed=12)
    _, aux = run_forward(runner, model, values, tokens)
    table = values["model.layers.0.block_sparse_moe.router.table"].astype(int)
    np.testing.assert_array_equal(aux["tokens_per_expert"][0], np.bincount(table[tokens.ravel()], minlength=4))


def test_domain_ids_reach_an_rre_router(runner):
    moe = MoEConfig(d_model=32, ffn_hidden=24, num_experts=4, top_k=1, router="rre",
                    router_options={"vocab_size": VOCAB, "num_domains": 2})
    model = Transformer(tiny(2, moe=moe))
    values = numpy_weights(model, seed=13)
    tokens = tokens_of((2, 8), seed=13)
    domains = np.repeat(np.array([[0], [1]], np.int32), 8, axis=1)  # sequence 0 from domain 0, 1 from 1
    _, aux = run_forward(runner, model, values, tokens, domains)
    np.testing.assert_array_equal(aux["tokens_per_expert"][0].reshape(2, 2).sum(-1), [8, 8])  # 2 experts per domain
    with pytest.raises(ConfigError, match="domain_ids"):
        run_forward(runner, model, values, tokens)


def test_bfloat16_model_stays_close_to_float32(runner):
    model = Transformer(tiny(2))
    values = numpy_weights(model, seed=14)
    tokens = tokens_of((2, 8), seed=14)
    try:
        low, low_aux = run_forward(runner, model, values, tokens, dtype="bfloat16")
    except ConfigError as error:  # MindSpore on CPU has no bf16 MatMul: refused up front
        pytest.skip(str(error))
    full, full_aux = run_forward(runner, model, values, tokens)
    assert np.isfinite(low).all()
    assert np.abs(low - full).max() < 0.05 * np.abs(full).max()
    assert np.abs(low - full).max() > 0  # it did run in bf16
    np.testing.assert_allclose(low_aux["balance_loss"], full_aux["balance_loss"], rtol=0.05)  # router in float32
