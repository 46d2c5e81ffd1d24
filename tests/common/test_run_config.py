"""The run config schema: every bad setting stops with one line naming the key; overrides and
save/load round-trip. No framework is imported."""
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from core.errors import ConfigError
from models.moe_config import MoEConfig
from training.config import (
    SECTIONS,
    RunConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
    transformer_config,
)

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


def error_of(raw) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_quickstart_lists_every_key_and_loads():
    raw = yaml.safe_load(QUICKSTART.read_text())
    for name in ("backend", "device", "dtype", "seed", "run_dir"):
        assert name in raw, name
    for section, cls in SECTIONS.items():
        expected = {f.name for f in fields(cls)} - ({"d_model"} if cls is MoEConfig else set())
        assert set(raw[section]) == expected, section
    config = load_config(QUICKSTART)
    assert config.moe.d_model == config.model.d_model
    assert config.model.moe_every > 0 and config.moe.num_experts > 1


@pytest.mark.parametrize("raw, start", [
    ({"train": {"lrr": 1.0}}, "train.lrr: unknown key; did you mean train.lr?"),
    ({"modle": {}}, "modle: unknown key; did you mean model?"),
    ({"moe": {"d_model": 64}}, "moe.d_model: unknown key; the experts' width is model.d_model"),
    ({"data": {"corpus": ["bible"]}}, "data.corpus: unknown key"),
])
def test_unknown_key_is_named(raw, start):
    assert error_of(raw).startswith(start)


@pytest.mark.parametrize("raw, message", [
    ({"train": {"lr": "abc"}}, "train.lr: expected a number > 0, got 'abc'"),
    ({"train": {"steps": True}}, "train.steps: expected an integer >= 1, got True"),
    ({"train": {"batch_size": 8.0}}, "train.batch_size: expected an integer >= 1, got 8.0"),
    ({"train": {"graph_mode": "yes please"}}, "train.graph_mode: expected true or false, got 'yes please'"),
    ({"model": {"tie_embeddings": 1}}, "model.tie_embeddings: expected true or false, got 1"),
    ({"data": {"corpora": "shakespeare"}},
     "data.corpora: expected a list of shakespeare, bible, wikipedia, got 'shakespeare'"),
    ({"moe": {"top_k": "two"}}, "moe.top_k: expected an integer, got 'two'"),
    ({"moe": {"router_options": [1]}}, "moe.router_options: expected a mapping, got [1]"),
    ({"model": 3}, "model: expected a mapping of keys, got 3"),
])
def test_wrong_type_is_named(raw, message):
    assert error_of(raw) == message


@pytest.mark.parametrize("raw, start", [
    ({"backend": "jax"}, "backend: expected one of torch, mindspore, got 'jax'"),
    ({"device": "tpu"}, "device: expected one of auto, cpu, cuda, npu, ascend, gpu"),
    ({"train": {"lr": 0}}, "train.lr: expected a number > 0, got 0"),
    ({"train": {"beta2": 1.0}}, "train.beta2: expected a number >= 0 and < 1, got 1.0"),
    ({"data": {"val_fraction": 0.9}}, "data.val_fraction: expected a number > 0 and <= 0.5"),
    ({"data": {"corpora": ["shakespeare", "gutenberg"]}}, "data.corpora: expected a list of shakespeare"),
    ({"data": {"vocab_size": 100}}, "data.vocab_size: expected an integer >= 257, got 100"),
    ({"seed": -1}, "seed: expected an integer >= 0, got -1"),
    ({"model": {"d_model": 96, "num_heads": 5}}, "model.d_model=96 must be divisible by model.num_heads=5"),
    ({"model": {"num_heads": 4, "num_kv_heads": 3}}, "model.num_heads=4 must be divisible by model.num_kv_heads=3"),
    ({"model": {"num_layers": 2, "moe_every": 3}}, "model.moe_every=3 exceeds model.num_layers=2"),
    ({"data": {"seq_len": 512}, "model": {"max_seq_len": 256}}, "data.seq_len=512 exceeds model.max_seq_len=256"),
    ({"model": {"vocab_size": 1000}, "data": {"vocab_size": 4096}}, "model.vocab_size=1000 is smaller"),
    ({"train": {"lr": 1e-4, "min_lr": 1e-3}}, "train.min_lr=0.001 exceeds train.lr=0.0001"),
    ({"train": {"batch_size": 6, "grad_accum": 4}}, "train.batch_size=6 must be divisible by train.grad_accum=4"),
    ({"moe": {"top_k": 9, "num_experts": 8}}, "moe.top_k=9 exceeds"),
    ({"moe": {"dispatch": "lossless"}}, "moe.dispatch='lossless'"),
    ({"moe": {"router": "nope"}}, "moe.router='nope' is unknown"),
    ({"data": {"corpora": [], "files": []}}, "data.corpora: no text to train on"),
])
def test_bad_value_is_named(raw, start):
    assert error_of(raw).startswith(start)


def test_missing_files_are_named(tmp_path):
    assert error_of({"data": {"files": [str(tmp_path / "absent.txt")]}}) == \
        f"data.files: no such file: {str(tmp_path / 'absent.txt')!r}"
    (tmp_path / "table.csv").write_text("a,b\n")
    assert error_of({"data": {"files": [str(tmp_path / "table.csv")]}}).startswith("data.files: ")
    with pytest.raises(ConfigError, match=r"^--config: no such file: .*absent\.yaml'$"):
        load_config(tmp_path / "absent.yaml")


def test_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: invalid YAML at line") and "\n" not in str(info.value)


def test_scientific_notation_reads_as_number(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 3e-4\n  min_lr: 1E-5\nmodel:\n  norm_eps: 1.0e-6\n")
    config = load_config(path)
    assert (config.train.lr, config.train.min_lr, config.model.norm_eps) == (3e-4, 1e-5, 1e-6)


def test_set_overrides_take_yaml_values():
    config = load_config(QUICKSTART, ["train.lr=5e-4", "seed=11", "data.corpora=[shakespeare, wikipedia]",
                                      "train.graph_mode=false", "moe.router=switch", "moe.top_k=1"])
    assert config.train.lr == 5e-4 and config.seed == 11 and config.train.graph_mode is False
    assert config.data.corpora == ["shakespeare", "wikipedia"]
    assert (config.moe.router, config.moe.top_k) == ("switch", 1)
    base = load_config(QUICKSTART)
    assert base.train.lr != 5e-4 and base.seed != 11


def test_set_nested_option_and_bad_overrides():
    raw = apply_overrides({"moe": None}, ["moe.router_options.num_domains=3"])
    assert raw == {"moe": {"router_options": {"num_domains": 3}}}
    with pytest.raises(ConfigError, match=r"^--set 'trainlr': expected section.key=value$"):
        apply_overrides({}, ["trainlr"])
    with pytest.raises(ConfigError, match=r"^--set 'seed.x=1': seed is not a section$"):
        apply_overrides({"seed": 0}, ["seed.x=1"])
    with pytest.raises(ConfigError, match=r"^train.lrr: unknown key"):
        load_config(QUICKSTART, ["train.lrr=1"])
    with pytest.raises(ConfigError, match=r"^train.lr: expected a number > 0, got 'fast'$"):
        load_config(QUICKSTART, ["train.lr=fast"])


def test_saved_config_round_trips(tmp_path):
    config = load_config(QUICKSTART, ["moe.router_options={}", "train.lr=7e-4", "data.max_chars_per_corpus=1234",
                                      "model.norm_eps=1e-6", "backend=mindspore"])
    path = tmp_path / "run" / "config.yaml"
    save_config(config, path)
    saved = yaml.safe_load(path.read_text())
    assert "d_model" not in saved["moe"] and saved["model"]["d_model"] == config.model.d_model
    assert list(saved)[:5] == ["backend", "device", "dtype", "seed", "run_dir"]
    again = load_config(path)
    assert again == config
    assert config_to_dict(again) == config_to_dict(config)
    assert again != RunConfig()
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temp file left


def test_model_qk_norm_and_head_settings_reach_the_transformer():
    config = load_config(QUICKSTART, ["model.qk_norm=across_heads", "model.head_size=48",
                                      "model.partial_rotary_factor=0.5", "model.first_dense_layers=2"])
    model = transformer_config(config, 64)
    assert (model.qk_norm, model.head_dim, model.rotary_dim, model.moe_layer_indices) == ("across_heads", 48, 24, [3])
    with pytest.raises(ConfigError, match="model.qk_norm"):
        load_config(QUICKSTART, ["model.qk_norm=per_token"])
    latent = load_config(QUICKSTART, ["model.kv_lora_rank=16", "model.q_lora_rank=24", "model.qk_nope_head_dim=8",
                                      "model.qk_rope_head_dim=4", "model.v_head_dim=12", "model.rope_interleave=true",
                                      "model.num_kv_heads=4"])
    model = transformer_config(latent, 64)
    assert (model.kv_lora_rank, model.q_lora_rank, model.rotary_dim, model.v_head_dim, model.rope_interleave) == \
        (16, 24, 4, 12, True)
    with pytest.raises(ConfigError, match="model.v_head_dim=0: latent attention"):
        load_config(QUICKSTART, ["model.kv_lora_rank=16", "model.qk_nope_head_dim=8", "model.qk_rope_head_dim=4",
                                 "model.num_kv_heads=4"])
