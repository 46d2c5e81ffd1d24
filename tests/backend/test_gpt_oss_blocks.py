"""gpt-oss's attention (transformers' ``GptOssAttention``: q/k/v and o_proj biases, a sink
logit per head) gives our ``Attention`` with ``qkv_bias``, ``o_bias`` and ``sinks``; gpt-oss's MoE block (transformers' ``GptOssMLP``: router x W^T + b, top-k then softmax;
experts with biases on gate/up/down and the clamped SwiGLU, gate and up interleaved in the
fused ``gate_up_proj``) gives the same output as our MoE layer (router ``topk`` with
``gate_bias``, ``expert_type: clamped_swiglu``, ``expert_bias``) on the backend under test,
dropless (grouped) and with capacity buffers (batched). Weights are drawn so that the clamp
at ``swiglu_limit`` acts on part of the units. Tolerance 1e-5."""
import numpy as np
import pytest

from models.hf_gpt_oss import deinterleaved, interleaved
from models.moe_config import MoEConfig
from models.moe_layer import MoELayer

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssAttention, GptOssMLP, GptOssRotaryEmbedding  # noqa: E402

from models.attention import Attention  # noqa: E402
from tests.support.model_runs import run_forward  # noqa: E402

D, F_HIDDEN, E, K, LIMIT = 16, 12, 4, 2, 1.5


def hf_attention(seed: int):
    """A GptOssAttention (4 query heads of 8, 2 kv heads) with every weight, bias and sink drawn N(0, 0.5)."""
    config = transformers.GptOssConfig(hidden_size=D, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                       num_hidden_layers=1, layer_types=["full_attention"],
                                       rope_parameters=dict(rope_type="default", rope_theta=10000.0))
    config._attn_implementation = "eager"
    attention = GptOssAttention(config, 0)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in attention.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=generator))
    return attention.eval(), GptOssRotaryEmbedding(config)


@pytest.mark.parametrize("o_bias", [True, False])
def test_attention_gives_transformers_gpt_oss_attention(runner, o_bias):
    attention, rotary = hf_attention(seed=2)
    x = np.random.default_rng(3).normal(0.0, 1.0, (2, 6, D)).astype(np.float32)
    xt, seq = torch.as_tensor(x), x.shape[1]
    mask = torch.full((seq, seq), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        expected = attention(xt, rotary(xt, torch.arange(seq)[None]), mask)[0].numpy()
    values = {"attn." + name: p.detach().numpy() for name, p in attention.named_parameters()}
    ours = Attention(D, 4, 2, rope_theta=10000.0, init_std=0.1, prefix="attn.", qkv_bias=True, head_dim=8,
                     sinks=True, o_bias=o_bias)
    if not o_bias:  # without the output bias we are off by exactly that bias
        expected = expected - values.pop("attn.o_proj.bias")
    y = run_forward(runner, ours, values, x, np.arange(seq, dtype=np.float32))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def hf_block(seed: int):
    """A GptOssMLP with every weight and bias drawn N(0, 0.5) (its init leaves them empty)."""
    config = transformers.GptOssConfig(hidden_size=D, intermediate_size=F_HIDDEN, num_local_experts=E,
                                       num_experts_per_tok=K, swiglu_limit=LIMIT)
    block = GptOssMLP(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=generator))
    return block.eval()


def our_values(block) -> dict:
    """transformers' GptOssMLP tensors -> our MoE layer's parameters."""
    hf = {name: p.detach().numpy() for name, p in block.named_parameters()}
    w_gate, w_up = deinterleaved(hf["experts.gate_up_proj"])
    b_gate, b_up = deinterleaved(hf["experts.gate_up_proj_bias"])
    assert np.array_equal(interleaved(w_gate, w_up), hf["experts.gate_up_proj"])
    return {"router.weight": hf["router.weight"].T.copy(), "router.bias": hf["router.bias"],
            "experts.w_gate": w_gate, "experts.w_up": w_up, "experts.b_gate": b_gate, "experts.b_up": b_up,
            "experts.w_down": hf["experts.down_proj"], "experts.b_down": hf["experts.down_proj_bias"]}


@pytest.mark.parametrize("dispatch", ["dropless", "capacity"])
def test_moe_layer_gives_transformers_gpt_oss_block(runner, dispatch):
    block = hf_block(seed=0)
    x = np.random.default_rng(1).normal(0.0, 1.0, (2, 5, D)).astype(np.float32)
    with torch.no_grad():
        expected = block(torch.as_tensor(x))[0].numpy()
        gate_up = torch.as_tensor(x).reshape(-1, D) @ block.experts.gate_up_proj[0] + block.experts.gate_up_proj_bias[0]
    assert (gate_up.abs() > LIMIT).float().mean() > 0.2, "the clamp must act in this case"
    config = MoEConfig(d_model=D, ffn_hidden=F_HIDDEN, num_experts=E, top_k=K, router="topk", renormalize=True,
                       router_options=dict(gate_bias=True), expert_type="clamped_swiglu", expert_bias=True,
                       swiglu_limit=LIMIT, dispatch=dispatch, capacity_factor=float(E))
    y, _ = runner.forward(MoELayer(config), our_values(block), x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
