"""Optional: HF transformers' Llama and Mixtral, saved in their checkpoint format and loaded
through ``models.hf_names.from_hf``, give the same logits as our transformer on the backend
under test (checks names, [out, in] layouts, rotary layout, GQA head order, RMSNorm and the
Mixtral router). Skipped when transformers is not installed."""
import os

import numpy as np
import pytest

from models.hf_names import from_hf
from models.moe_config import MoEConfig
from models.transformer import Transformer
from models.transformer_config import TransformerConfig
from tests.support.model_runs import run_forward

transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
torch = pytest.importorskip("torch")

SIZES = dict(vocab_size=64, hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=16, rms_norm_eps=1e-5, rope_theta=10000.0,
             initializer_range=0.2, tie_word_embeddings=False)


def hf_logits_and_weights(model_class, config_class, tokens, tmp_path, **extra):
    torch.manual_seed(0)
    model = model_class(config_class(**SIZES, **extra)).eval()
    model.save_pretrained(tmp_path)
    weights = safetensors_numpy.load_file(os.path.join(tmp_path, "model.safetensors"))
    with torch.no_grad():
        logits = model(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()
    return logits, weights


def our_config(**settings) -> TransformerConfig:
    return TransformerConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_hidden=24,
                             max_seq_len=16, rope_theta=10000.0, norm_eps=1e-5, **settings)


def test_llama_checkpoint_gives_hf_logits(runner, tmp_path):
    tokens = np.random.default_rng(0).integers(0, 64, (2, 10)).astype(np.int32)
    expected, weights = hf_logits_and_weights(transformers.LlamaForCausalLM, transformers.LlamaConfig, tokens, tmp_path)
    model = Transformer(our_config(moe_every=0))
    values = from_hf(weights)
    assert values.keys() == model.param_specs().keys()
    logits, _ = run_forward(runner, model, values, tokens)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_mixtral_checkpoint_gives_hf_logits(runner, tmp_path):
    tokens = np.random.default_rng(1).integers(0, 64, (2, 10)).astype(np.int32)
    expected, weights = hf_logits_and_weights(transformers.MixtralForCausalLM, transformers.MixtralConfig, tokens,
                                              tmp_path, num_local_experts=4, num_experts_per_tok=2)
    moe = MoEConfig(d_model=32, ffn_hidden=24, num_experts=4, top_k=2, router="topk", renormalize=True)
    model = Transformer(our_config(moe_every=1, moe=moe))
    values = from_hf(weights)
    assert values.keys() == model.param_specs().keys()
    logits, _ = run_forward(runner, model, values, tokens)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
