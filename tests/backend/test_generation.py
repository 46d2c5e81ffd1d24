"""KV-cached decoding on the backend under test: prefill plus one token at a time gives the
full forward's logits (dense, top-k, AdaMoE, OLMoE-, GLM-4.5- and DeepSeek-V3-shaped models, the
last with latent attention, whose cache holds compressed latents), with a growing
cache and with the fixed-length cache of the decode step that generation runs (compiled on
MindSpore); seeded sampling repeats, greedy follows the argmax, also for a batch of prompts of
different lengths (each row as if alone) and with a 200,000-token vocabulary in a few MB of
memory (a fresh process: tests/support/large_vocab_greedy.py); expert choice, over-long
decoding and a tokenizer of another model are refused in one line."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError
from models.moe_config import MoEConfig
from models.transformer import Transformer
from models.transformer_config import TransformerConfig
from tests.support.harness import numpy_weights
from tests.support.model_runs import run_forward
from training.generation import Decoder

VOCAB = 64


def tiny(moe_every: int = 1, router: str = "topk", **moe) -> TransformerConfig:
    settings = {**dict(d_model=32, ffn_hidden=24, num_experts=4, top_k=2, router=router, expert_init_std=0.1), **moe}
    return TransformerConfig(vocab_size=VOCAB, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_hidden=48,
                             max_seq_len=16, init_std=0.1, moe_every=moe_every,
                             moe=MoEConfig(**settings) if moe_every else None)


def decoder(runner, config, seed=0, execution="eager"):
    """Eager unless asked: compiling MindSpore's step costs seconds per test, and the tests of
    the compiled step ask for it."""
    model = Transformer(config)
    values = numpy_weights(model, seed=seed)
    return Decoder(model, runner.module(model, values), execution), model, values


GLM4_SHAPED = replace(tiny(1, "aux_free", num_experts=8, shared_expert_hidden=16,
                           router_options=dict(n_group=4, topk_group=2, routed_scaling_factor=2.5)),
                      qk_norm="per_head", partial_rotary_factor=0.5, head_size=12, first_dense_layers=1, qkv_bias=True)
LATENT = dict(kv_lora_rank=12, q_lora_rank=6, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6, rope_interleave=True)
DEEPSEEK_V3_SHAPED = replace(GLM4_SHAPED, qk_norm="none", partial_rotary_factor=1.0, head_size=0, qkv_bias=False,
                             num_kv_heads=4, **LATENT)


@pytest.mark.parametrize("config", [tiny(0), tiny(1), tiny(1, "adamoe", num_null_experts=4, top_k=3),
                                    replace(tiny(1), qk_norm="across_heads"), GLM4_SHAPED, DEEPSEEK_V3_SHAPED],
                         ids=["dense", "topk", "adamoe", "olmoe_shaped", "glm4_moe_shaped", "deepseek_v3_shaped"])
def test_cached_decoding_gives_full_forward_logits(runner, config):
    dec, model, values = decoder(runner, config)
    tokens = np.random.default_rng(0).integers(0, VOCAB, (2, 12)).astype(np.int32)
    full, _ = run_forward(runner, model, values, tokens)
    logits, _, cache = dec.step(tokens[:, :5])
    steps = [logits]
    for chunk in ((5, 6), (6, 9), (9, 10), (10, 11), (11, 12)):  # one token and a 3-token chunk
        logits, _, cache = dec.step(tokens[:, chunk[0]:chunk[1]], cache)
        steps.append(logits)
    assert cache[0][0].shape[1] == 12
    if config.kv_lora_rank:  # latent attention caches its compressed latent and shared rotary key
        assert [x.shape for x in cache[0]] == [(2, 12, 12), (2, 12, 4)]
    np.testing.assert_allclose(np.concatenate(steps, 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("latent", [{}, dict(LATENT, num_kv_heads=4)], ids=["gqa", "latent"])
def test_fixed_length_cache_steps_give_full_forward_logits(runner, latent):
    """AdaMoE blocks only (dense blocks are in the growing-cache test): one compile on MindSpore;
    latent attention's cache holds latents [B, M, C] and rotary keys [B, M, Dr], its step eager
    (compiling it would take MindSpore 20 s more; the step's code is the same)."""
    config = replace(tiny(1, "adamoe", num_null_experts=4, top_k=3), **latent)
    dec, model, values = decoder(runner, config, execution="eager" if latent else "auto")
    assert dec.compiled == (runner.name == "mindspore" and not latent)  # auto: MindSpore compiles, torch runs eagerly
    tokens = np.random.default_rng(1).integers(0, VOCAB, (2, 10)).astype(np.int32)
    full, _ = run_forward(runner, model, values, tokens)
    logits, cache = dec.prefill(tokens[:, :4], 12)
    steps = [logits]
    for position in range(4, 10):
        logits, _, cache = dec.step_at(tokens[:, position:position + 1], position, cache)
        steps.append(logits)
    assert len(cache) == 4 and cache[0].shape == ((2, 12, 12) if latent else (2, 12, 2, 8))
    np.testing.assert_allclose(np.stack(steps, 1), full[:, 3:], rtol=1e-5, atol=1e-5)


def test_greedy_with_a_200k_vocabulary_takes_little_memory_and_follows_the_argmax(runner):
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "tests.support.large_vocab_greedy", runner.name, "eager"],  # no compile
                          cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rows, argmax = np.array(result["rows"]), np.array(result["argmax_rows"])
    np.testing.assert_array_equal(rows[:, 3:], argmax[:, 2:])  # each new token: the argmax after its prefix
    assert result["peak_growth_mb"] < 32, result  # a V x V float64 identity would be 298 GiB


def test_sampling_repeats_with_a_seed_and_greedy_follows_the_argmax(runner):
    dec, model, values = decoder(runner, tiny(1, "adamoe", num_null_experts=4, top_k=3))
    prompt = [[3, 9, 27], [5, 1, 2]]
    first = dec.generate(prompt, 8, temperature=0.8, top_k=20, top_p=0.9, seed=7)
    again = dec.generate(prompt, 8, temperature=0.8, top_k=20, top_p=0.9, seed=7)
    np.testing.assert_array_equal(np.stack(first.rows), np.stack(again.rows))
    assert [len(row) for row in first.rows] == [11, 11] and first.new_tokens == 16 and first.tokens_per_s > 0
    assert 0 <= first.mean_true_experts_per_token <= 3
    greedy = np.stack(dec.generate(prompt, 6, temperature=0).rows)
    full, _ = run_forward(runner, model, values, greedy.astype(np.int32))
    np.testing.assert_array_equal(greedy[:, 3:], full[:, 2:-1].argmax(-1))


def test_prompts_of_different_lengths_decode_as_if_alone(runner):
    dec, _, _ = decoder(runner, tiny(1))
    prompts = [[3, 9], [5, 1, 2, 8, 4], [7, 7, 6]]
    batch = dec.generate(prompts, 5, temperature=0)
    assert [len(row) for row in batch.rows] == [7, 10, 8] and batch.new_tokens == 15
    for prompt, row in zip(prompts, batch.rows):
        alone = dec.generate([prompt], 5, temperature=0).rows[0]
        np.testing.assert_array_equal(row, alone)


def test_routers_that_cannot_decode_and_long_decoding_are_refused(runner):
    model = Transformer(tiny(1, "expert_choice"))
    with pytest.raises(ConfigError, match="expert_choice.*not causal.*autoregressive decoding"):
        Decoder(model, runner.module(model, numpy_weights(model, seed=0)))
    dec, _, _ = decoder(runner, tiny(0))
    _, _, cache = dec.step(np.zeros((1, 15), np.int32))
    with pytest.raises(ConfigError, match="decoding position 17 exceeds model.max_seq_len=16"):
        dec.step(np.zeros((1, 2), np.int32), cache)


def test_generate_script_samples_from_an_hf_folder_and_refuses_a_foreign_tokenizer(runner, tmp_path, capsys):
    import json

    from tokenizers import Tokenizer, models

    from scripts.generate import main
    from training.hf_checkpoint import save_hf_checkpoint
    config = tiny(1)
    save_hf_checkpoint(config, numpy_weights(Transformer(config), seed=0), tmp_path)
    assert main([str(tmp_path), "--backend", runner.name, "--prompt-ids", "1,2,3", "--max-new-tokens", "4",
                 "--execution", "eager"]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().split(",")) == 7 and "tokens/s" in err and "mean true experts per generated token" in err
    Tokenizer(models.WordLevel({f"t{i}": i for i in range(100)}, unk_token="t0")).save(str(tmp_path / "tok.json"))
    assert main([str(tmp_path), "--backend", runner.name, "--tokenizer", str(tmp_path / "tok.json")]) == 2
    assert "tokenizer has 100 tokens but the model's vocab_size is 64" in capsys.readouterr().err
    Tokenizer(models.WordLevel({f"t{i}": i for i in range(64)}, unk_token="t0")).save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "t5"}))
    hf = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**hf, "eos_token_id": 7}))
    assert main([str(tmp_path), "--backend", runner.name, "--prompt", "t1 t2"]) == 2
    assert "tokenizer's eos token 't5' has id 5 but" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(json.dumps({**hf, "eos_token_id": 5}))
    assert main([str(tmp_path), "--backend", runner.name, "--prompt-ids", "1,2", "--prompt-ids", "3,4,5,6",
                 "--max-new-tokens", "3", "--execution", "eager"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line]
    assert [len(row.split()) for row in rows] == [5, 7]  # WordLevel decodes to space-separated tokens
