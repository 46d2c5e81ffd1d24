"""The run config: one YAML file with sections model, moe, data, train, validated up front.

Every key has a rule (type and range); an unknown key, a wrong type or an out-of-range value
is one ``ConfigError`` line naming the key, raised before any work. ``--set section.key=value``
overrides are applied to the raw YAML before validation (values parsed as YAML scalars).
"""
from __future__ import annotations

import copy
import difflib
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Dict, List, Sequence

from core.errors import ConfigError
from core.layout import check_experts
from core.rules import FLAG, TEXT, Rule, integer, name_lists, names, number, one_of, rules_of, setting
from models.moe_config import MoEConfig
from models.transformer_config import TransformerConfig
from training.data.corpora import CORPORA
from training.yaml_io import parse_yaml, read_yaml, write_yaml_atomic

BACKENDS = ("torch", "mindspore")
DEVICES = ("auto", "cpu", "cuda", "npu", "ascend", "gpu")
DTYPES = ("float32", "bfloat16", "float16")
TOKENIZERS = ("bpe", "gpt2")
GPT2_VOCAB_SIZE = 50257
USER_FILE_SUFFIXES = (".txt", ".jsonl")
ALL_TO_ALL = ("flat", "hierarchical")
LATENT_KEYS = ("kv_lora_rank", "q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "rope_interleave")
ATTENTION_KEYS = ("qkv_bias", "o_bias", "attention_sinks", "sliding_window", "layer_types", "yarn_factor",
                  "yarn_original_max_seq_len", "yarn_beta_fast", "yarn_beta_slow", "yarn_attention_factor",
                  "yarn_mscale_all_dim", "yarn_truncate")


def transformer_setting(name: str) -> Any:
    """A model key that is ``TransformerConfig``'s field ``name``, with its default and rule."""
    declared = {f.name: f for f in fields(TransformerConfig)}[name]
    default = declared.default_factory() if declared.default is MISSING else declared.default
    return setting(default, declared.metadata["rule"])


@dataclass
class ModelConfig:
    """Decoder-only transformer (Llama/Mixtral style). ``vocab_size`` 0 takes the tokenizer's;
    ``moe_every`` 0 is a dense model, N makes every N-th layer (N, 2N, ...) an MoE layer;
    ``qk_norm``: q/k RMSNorm per head (Qwen3) or across heads (OLMoE), see models.attention;
    ``head_size``, ``partial_rotary_factor``, ``first_dense_layers``: see
    models.transformer_config (Qwen3's wide heads, GLM-4.5's half rotary and dense first block);
    ``kv_lora_rank`` > 0 with ``q_lora_rank``, ``qk_nope_head_dim``, ``qk_rope_head_dim``,
    ``v_head_dim``, ``rope_interleave``: DeepSeek's multi-head latent attention
    (models.latent_attention). ``qkv_bias``, ``o_bias``, ``attention_sinks``, ``sliding_window``,
    ``layer_types`` and the ``yarn_*`` keys are models.transformer_config's (gpt-oss has them all)."""

    vocab_size: int = setting(0, integer(0))
    d_model: int = setting(128, integer(1))
    num_layers: int = setting(4, integer(1))
    num_heads: int = setting(4, integer(1))
    num_kv_heads: int = setting(2, integer(1))
    ffn_hidden: int = setting(352, integer(1))
    ffn_type: str = setting("swiglu", one_of("swiglu", "gelu"))
    max_seq_len: int = setting(256, integer(1))
    rope_theta: float = setting(10000.0, number(0.0, low_open=True))
    norm_eps: float = setting(1e-5, number(0.0, low_open=True))
    moe_every: int = setting(2, integer(0))
    tie_embeddings: bool = setting(True, FLAG)
    qk_norm: str = transformer_setting("qk_norm")
    head_size: int = transformer_setting("head_size")
    partial_rotary_factor: float = transformer_setting("partial_rotary_factor")
    first_dense_layers: int = transformer_setting("first_dense_layers")
    kv_lora_rank: int = transformer_setting("kv_lora_rank")
    q_lora_rank: int = transformer_setting("q_lora_rank")
    qk_nope_head_dim: int = transformer_setting("qk_nope_head_dim")
    qk_rope_head_dim: int = transformer_setting("qk_rope_head_dim")
    v_head_dim: int = transformer_setting("v_head_dim")
    rope_interleave: bool = transformer_setting("rope_interleave")
    qkv_bias: bool = transformer_setting("qkv_bias")
    o_bias: bool = transformer_setting("o_bias")
    attention_sinks: bool = transformer_setting("attention_sinks")
    sliding_window: int = transformer_setting("sliding_window")
    layer_types: List[str] = transformer_setting("layer_types")
    yarn_factor: float = transformer_setting("yarn_factor")
    yarn_original_max_seq_len: int = transformer_setting("yarn_original_max_seq_len")
    yarn_beta_fast: float = transformer_setting("yarn_beta_fast")
    yarn_beta_slow: float = transformer_setting("yarn_beta_slow")
    yarn_attention_factor: float = transformer_setting("yarn_attention_factor")
    yarn_mscale_all_dim: float = transformer_setting("yarn_mscale_all_dim")
    yarn_truncate: bool = transformer_setting("yarn_truncate")


@dataclass
class DataConfig:
    """Text sources and tokenisation. ``files``: user .txt (one document each) or .jsonl
    (field ``text``, optional ``domain``) paths, relative to the working directory.
    ``max_chars_per_corpus`` 0 takes every character of each source. ``node_domains``: data
    placed by node (``training.data.node_placement``), one list of domain names per node
    (a corpus's domain is its name, a file's its stem or its records' ``domain``); empty:
    every rank reads the one mixed stream."""

    corpora: List[str] = setting(["shakespeare"], names(*CORPORA))
    files: List[str] = setting([], names())
    tokenizer: str = setting("bpe", one_of(*TOKENIZERS))
    vocab_size: int = setting(4096, integer(257))
    seq_len: int = setting(128, integer(1))
    val_fraction: float = setting(0.05, number(0.0, low_open=True, high=0.5))
    cache_dir: str = setting(".cache/data", TEXT)
    max_chars_per_corpus: int = setting(0, integer(0))
    node_domains: List[List[str]] = setting([], name_lists())


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping. AdamW with linear warmup then cosine decay to
    ``min_lr``; ``grad_accum``: micro-batches per step (gradient accumulation: each rank's
    batch_size / world rows in that many equal slices, one update); ``grad_clip`` 0
    disables clipping; ``eval_every``/``checkpoint_every`` 0 turn periodic
    evaluation/checkpoints off; ``graph_mode``: MindSpore compiled step;
    ``loss_scale``: float16 loss scaling (``backends.loss_scale``: ``auto`` is dynamic for
    float16 and off otherwise; ``static`` keeps ``loss_scale_init``; dynamic halves it on an
    overflow and doubles it after ``loss_scale_window`` finite steps); ``distributed_optimizer``:
    AdamW's moments (and a low-precision model's float32 masters) sharded over the
    data-parallel ranks (ZeRO-1: ``parallel.distributed_optimizer``), checkpoints unchanged."""

    steps: int = setting(1000, integer(1))
    batch_size: int = setting(16, integer(1))
    grad_accum: int = setting(1, integer(1))
    lr: float = setting(1e-3, number(0.0, low_open=True))
    min_lr: float = setting(1e-4, number(0.0))
    warmup_steps: int = setting(100, integer(0))
    weight_decay: float = setting(0.1, number(0.0))
    beta1: float = setting(0.9, number(0.0, high=1.0, high_open=True))
    beta2: float = setting(0.95, number(0.0, high=1.0, high_open=True))
    grad_clip: float = setting(1.0, number(0.0))
    eval_every: int = setting(100, integer(0))
    eval_batches: int = setting(8, integer(1))
    log_every: int = setting(10, integer(1))
    checkpoint_every: int = setting(200, integer(0))
    keep_checkpoints: int = setting(3, integer(1))
    max_bad_steps: int = setting(5, integer(1))
    loss_scale: str = setting("auto", one_of("auto", "dynamic", "static", "none"))
    loss_scale_init: float = setting(65536.0, number(0.0, low_open=True))
    loss_scale_window: int = setting(2000, integer(1))
    graph_mode: bool = setting(True, FLAG)
    distributed_optimizer: bool = setting(False, FLAG)


@dataclass
class ParallelConfig:
    """Multi-process runs (started by scripts/run_cpu.sh, run_cuda.sh, run_ascend.sh; the
    world size and the node layout come from the launcher). ``expert_parallel``: ranks
    that split each MoE layer's experts (data parallelism fills the rest of the world);
    ``world_size`` 0 accepts what the launcher started, N refuses anything else;
    ``timeout_s``: every collective gives up after this long (a dead or stalled rank ends
    the job instead of hanging it); ``data_timeout_s``: how long the other ranks wait for
    rank 0 to build the data (tokenizer and token caches), and every rank for the others to
    load it, outside any collective (a large corpus takes far longer than a collective);
    ``all_to_all``: ``flat`` (one exchange over the EP group) or ``hierarchical`` (inside
    nodes first, then one aggregated message per node pair and rail: ``parallel.all_to_all``)."""

    expert_parallel: int = setting(1, integer(1))
    world_size: int = setting(0, integer(0))
    timeout_s: float = setting(300.0, number(0.0, low_open=True))
    data_timeout_s: float = setting(7200.0, number(0.0, low_open=True))
    all_to_all: str = setting("flat", one_of(*ALL_TO_ALL))


@dataclass
class RunConfig:
    """The whole run. ``moe`` is the MoE layer config; its d_model is model.d_model."""

    backend: str = setting("torch", one_of(*BACKENDS))
    device: str = setting("auto", one_of(*DEVICES))
    dtype: str = setting("float32", one_of(*DTYPES))
    seed: int = setting(0, integer(0))
    run_dir: str = setting("runs/quickstart", TEXT)
    model: ModelConfig = field(default_factory=ModelConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def __post_init__(self) -> None:
        self.moe = replace(self.moe, d_model=self.model.d_model)


SECTIONS = {"model": ModelConfig, "moe": MoEConfig, "data": DataConfig, "train": TrainConfig,
            "parallel": ParallelConfig}
_HINTS = {("moe", "d_model"): "the experts' width is model.d_model"}


def _rules(cls) -> Dict[str, Rule]:
    """The YAML rules of a section's keys. MoE keys are checked here for their type only:
    their values are ``MoEConfig.validate``'s (the layer's own messages, ``moe.top_k=0: ...``),
    and the layer's width is model.d_model."""
    if cls is MoEConfig:
        return {name: rule.type_only() for name, rule in rules_of(cls).items() if name != "d_model"}
    return rules_of(cls)


def _check_keys(raw: dict, allowed: Sequence[str], section: str) -> None:
    prefix = f"{section}." if section else ""
    for key in raw:
        if key not in allowed:
            hint = _HINTS.get((section, key))
            close = difflib.get_close_matches(str(key), allowed, n=1)
            extra = f"; {hint}" if hint else (f"; did you mean {prefix}{close[0]}?" if close else "")
            raise ConfigError(f"{prefix}{key}: unknown key{extra} (valid keys: {', '.join(allowed)})")


def _checked(raw: Any, cls, section: str) -> dict:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{section}: expected a mapping of keys, got {raw!r}")
    rules = _rules(cls)
    _check_keys(raw, list(rules), section)
    return {key: rules[key].apply(f"{section}.{key}", value) for key, value in raw.items()}


def config_from_dict(raw: Any) -> RunConfig:
    """Validated RunConfig from a plain mapping (missing keys take defaults)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping with sections {', '.join(SECTIONS)}, got {raw!r}")
    top = _rules(RunConfig)
    _check_keys(raw, list(top) + list(SECTIONS), "")
    values = {key: top[key].apply(key, value) for key, value in raw.items() if key in top}
    parts = {name: _checked(raw.get(name), cls, name) for name, cls in SECTIONS.items()}
    model = ModelConfig(**parts["model"])
    config = RunConfig(**values, model=model, moe=MoEConfig(**copy.deepcopy(parts["moe"])),
                       data=DataConfig(**parts["data"]), train=TrainConfig(**parts["train"]),
                       parallel=ParallelConfig(**parts["parallel"]))
    check_run(config)
    return config


def check_run(config: RunConfig) -> None:
    """Checks that span keys or sections; each failure names the keys involved."""
    m, d, t = config.model, config.data, config.train
    if d.seq_len > m.max_seq_len:
        raise ConfigError(f"data.seq_len={d.seq_len} exceeds model.max_seq_len={m.max_seq_len}")
    vocab = tokenizer_vocab(config)
    if 0 < m.vocab_size < vocab:
        raise ConfigError(f"model.vocab_size={m.vocab_size} is smaller than the {d.tokenizer} tokenizer's "
                          f"{vocab} tokens (use 0 to take the tokenizer's)")
    if not d.corpora and not d.files:
        raise ConfigError("data.corpora: no text to train on: name a corpus or give data.files")
    if len(set(d.corpora)) < len(d.corpora):
        raise ConfigError(f"data.corpora: {d.corpora} names a corpus twice")
    for name in d.files:
        path = Path(name)
        if path.suffix not in USER_FILE_SUFFIXES:
            raise ConfigError(f"data.files: {name!r} must end in {' or '.join(USER_FILE_SUFFIXES)}")
        if not path.is_file():
            raise ConfigError(f"data.files: no such file: {name!r}")
    if t.min_lr > t.lr:
        raise ConfigError(f"train.min_lr={t.min_lr:g} exceeds train.lr={t.lr:g}")
    if t.batch_size % t.grad_accum:
        raise ConfigError(f"train.batch_size={t.batch_size} must be divisible by train.grad_accum={t.grad_accum}")
    if t.warmup_steps > t.steps:
        raise ConfigError(f"train.warmup_steps={t.warmup_steps} exceeds train.steps={t.steps}")
    config.moe.validate(section="moe")
    check_experts(config.moe.num_experts, config.parallel.expert_parallel)
    if config.parallel.world_size and (config.parallel.world_size % config.parallel.expert_parallel
                                       or t.batch_size % config.parallel.world_size):
        raise ConfigError(f"parallel.world_size={config.parallel.world_size} must be a multiple of "
                          f"parallel.expert_parallel={config.parallel.expert_parallel} and divide "
                          f"train.batch_size={t.batch_size}")
    _check_finite(config.moe.router_options, "moe.router_options")
    from models.routers import router_class
    router_class(config.moe.router)(config.moe)  # the router checks its own options
    transformer_config(config, vocab)  # the model's own checks (heads, rotary pairs, MoE placement)


def tokenizer_vocab(config: RunConfig) -> int:
    """The tokenizer's vocabulary size, known before it is trained: GPT-2's, or data.vocab_size."""
    return GPT2_VOCAB_SIZE if config.data.tokenizer == "gpt2" else config.data.vocab_size


def transformer_config(config: RunConfig, tokenizer_vocab: int) -> TransformerConfig:
    """The model section (plus moe) as a validated TransformerConfig; vocab_size 0 -> the tokenizer's."""
    m = config.model
    return TransformerConfig(vocab_size=m.vocab_size or tokenizer_vocab, d_model=m.d_model,
                             num_layers=m.num_layers, num_heads=m.num_heads, num_kv_heads=m.num_kv_heads,
                             ffn_hidden=m.ffn_hidden, ffn_type=m.ffn_type, max_seq_len=m.max_seq_len,
                             rope_theta=m.rope_theta, norm_eps=m.norm_eps, tie_embeddings=m.tie_embeddings,
                             qk_norm=m.qk_norm, head_size=m.head_size, partial_rotary_factor=m.partial_rotary_factor,
                             first_dense_layers=m.first_dense_layers, moe_every=m.moe_every, moe=config.moe if m.moe_every else None,
                             **{key: getattr(m, key) for key in LATENT_KEYS + ATTENTION_KEYS}).validate()


def _check_finite(value: Any, path: str) -> None:
    """ConfigError naming the first NaN/inf number anywhere in ``value`` (nested mappings, lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: expected a finite number, got {value!r}")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        _check_finite(item, f"{path}.{key}" if isinstance(value, dict) else f"{path}[{key}]")


def apply_overrides(raw: Any, overrides: Sequence[str]) -> dict:
    """A copy of ``raw`` with each ``section.key=value`` (or top-level ``key=value``) set;
    values are parsed as YAML (``3e-4`` -> float, ``[a, b]`` -> list, ``true`` -> bool)."""
    result = copy.deepcopy(raw) if raw is not None else {}
    if not isinstance(result, dict):
        raise ConfigError(f"config: expected a mapping with sections {', '.join(SECTIONS)}, got {raw!r}")
    for item in overrides:
        key, sep, text = item.partition("=")
        path = key.strip().split(".")
        if not sep or not all(path):
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        node = result
        for depth, part in enumerate(path[:-1]):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(path[:depth + 1])} is not a section")
        node[path[-1]] = parse_yaml(text, f"--set {key}")
    return result


def load_config(path: Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read, override and validate a YAML run config; an empty file or a document that is
    not a mapping is a ConfigError naming the file."""
    raw = read_yaml(Path(path))
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise ConfigError(f"{path}: expected a mapping with sections {', '.join(SECTIONS)}, got {got}")
    return config_from_dict(apply_overrides(raw, overrides))


def config_to_dict(config: RunConfig) -> Dict[str, Any]:
    """Plain nested mapping in section order (moe without d_model): round-trips through
    ``config_from_dict``."""
    top = {f.name: getattr(config, f.name) for f in fields(RunConfig) if f.name not in SECTIONS}
    moe = asdict(config.moe)
    moe.pop("d_model")
    return {**top, "model": asdict(config.model), "moe": moe,
            "data": asdict(config.data), "train": asdict(config.train), "parallel": asdict(config.parallel)}


def save_config(config: RunConfig, path: Path) -> None:
    """Write the resolved config as YAML (atomically), loadable by ``load_config``."""
    write_yaml_atomic(config_to_dict(config), Path(path))
