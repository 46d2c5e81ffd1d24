"""Property-based config fuzzing: each example takes one of the shipped configs (every
router) and breaks it in one way (an unknown key at some level, a wrong type, a size of
zero or below, NaN/inf, top_k above the slots, another router's option, a bad value of
its own router's option, a missing data file) or writes a broken config file (bad YAML, empty, a list or scalar, non-UTF-8). Every
one must end in one ``ConfigError`` line naming the key (or the file); nothing else may
escape, and no config that reaches ``RunConfig`` counts. ``-s`` prints how many were tried."""
import copy
import math
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import ConfigError
from core.rules import Rule
from models.routers import ROUTERS, router_class
from training.config import SECTIONS, RunConfig, _rules, config_from_dict, load_config
from training.yaml_io import read_yaml

ROOT = Path(__file__).resolve().parents[2]
BASES = {path.stem: read_yaml(path) for path in sorted((ROOT / "configs").glob("*.yaml"))}
EXAMPLES = 1500  # ~10 s on the 2-core machine

# Where MoEConfig.validate (not the type rule) sets the lower bound.
MOE_LOW = {"ffn_hidden": 1, "num_experts": 1, "top_k": 1, "num_null_experts": 0, "balance_loss_coef": 0,
           "z_loss_coef": 0, "router_init_std": 0, "expert_init_std": 0}
OPTIONS = {name: {f.name for f in fields(router_class(name).Options)} for name in ROUTERS}

KINDS = ["unknown_key", "wrong_type", "out_of_range", "not_finite", "top_k", "other_router", "option_value",
         "missing_file"]
KEYS = [(None, key) for key in _rules(RunConfig)] + \
       [(section, key) for section, cls in SECTIONS.items() for key in _rules(cls)]
MOE_INTS = ("ffn_hidden", "num_experts", "top_k", "num_null_experts")


def rule_of(section, key) -> Rule:
    return (_rules(RunConfig) if section is None else _rules(SECTIONS[section]))[key]


BOUNDED = [(s, k) for s, k in KEYS if s != "moe" and rule_of(s, k).low is not None] + [("moe", k) for k in MOE_LOW]
SCALARS = st.one_of(st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=8), st.booleans(), st.none())


def wrong_type(rule: Rule):
    """Values of a type the rule does not take."""
    containers = st.one_of(st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=5), SCALARS, max_size=2))
    by_kind = {
        "int": st.one_of(st.floats(), st.text(max_size=8), st.booleans(), containers, st.none()),
        "number": st.one_of(st.text(max_size=8), st.booleans(), containers, st.none()),
        "bool": st.one_of(st.integers(), st.floats(), st.text(max_size=8), containers, st.none()),
        "str": st.one_of(st.integers(), st.floats(), st.booleans(), containers, st.none(), st.just(""),
                         *([st.text(max_size=8).filter(lambda v: v not in rule.choices)] if rule.choices else [])),
        "str_list": st.one_of(st.integers(), st.text(min_size=1, max_size=8), st.lists(st.integers(), min_size=1,
                              max_size=2), st.dictionaries(st.text(max_size=5), SCALARS, min_size=1, max_size=2)),
        "str_lists": st.one_of(st.integers(), st.text(min_size=1, max_size=8),
                               st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=2)),
        "mapping": st.one_of(st.integers(), st.text(max_size=8), st.lists(SCALARS, max_size=2)),
    }
    return by_kind[rule.kind]


def below(low: float, open_: bool, integral: bool):
    """Numbers under a lower bound (or at it, when the bound is open)."""
    if integral:
        return st.integers(max_value=int(low) - (0 if open_ else 1), min_value=-10**6)
    top = st.floats(max_value=low, exclude_max=not open_, allow_nan=False, allow_infinity=False, min_value=-1e9)
    return st.one_of(top, st.integers(max_value=math.ceil(low) - 1, min_value=-10**6)) if not open_ else top


def section_of(raw: dict, section) -> dict:
    """The mapping that holds ``section``'s keys (the top level for None), created if absent."""
    if section is None:
        return raw
    if not isinstance(raw.get(section), dict):
        raw[section] = {}
    return raw[section]


@st.composite
def broken_config(draw):
    """(mutation kind, raw config, the key the error must name)."""
    base_name = draw(st.sampled_from(sorted(BASES)))
    raw = copy.deepcopy(BASES[base_name])
    moe = raw.setdefault("moe", {})
    kind = draw(st.sampled_from(KINDS))
    if kind == "unknown_key":
        level = draw(st.sampled_from([None, *SECTIONS, "router_options"]))
        allowed = (set(_rules(RunConfig)) | set(SECTIONS) if level is None else
                   OPTIONS[moe.get("router", "topk")] if level == "router_options" else set(_rules(SECTIONS[level])))
        key = draw(st.text(st.characters(categories=["L", "N", "P"]), min_size=1, max_size=12)
                   .filter(lambda k: k not in allowed))
        if level == "router_options":
            moe.setdefault("router_options", {})
            moe["router_options"] = {**(moe["router_options"] or {}), key: draw(SCALARS)}
            return kind, raw, f"moe.router_options.{key}"
        section_of(raw, level)[key] = draw(SCALARS)
        return kind, raw, key if level is None else f"{level}.{key}"
    if kind == "wrong_type":
        section, key = draw(st.sampled_from([k for k in KEYS if k != ("moe", "router_options")]))
        section_of(raw, section)[key] = draw(wrong_type(rule_of(section, key)))
    elif kind == "out_of_range":
        section, key = draw(st.sampled_from(BOUNDED))
        rule = rule_of(section, key)
        integral = rule.kind == "int" or key in MOE_INTS
        if section == "moe":
            value = draw(below(MOE_LOW[key], False, integral))
        elif rule.high is not None and draw(st.booleans()):
            value = draw(st.floats(min_value=rule.high, exclude_min=not rule.high_open, max_value=1e9))
        else:
            value = draw(below(rule.low, rule.low_open, integral))
        section_of(raw, section)[key] = value
    elif kind == "not_finite":
        section, key = draw(st.sampled_from([k for k in KEYS if rule_of(*k).kind in ("int", "number")]))
        section_of(raw, section)[key] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    elif kind == "top_k":
        section, key = "moe", "top_k"
        moe["top_k"] = moe.get("num_experts", 8) + moe.get("num_null_experts", 0) + draw(st.integers(1, 64))
    elif kind == "other_router":
        router = moe.get("router", "topk")
        foreign = sorted(set().union(*OPTIONS.values()) - OPTIONS[router])
        key = draw(st.sampled_from(foreign))
        moe["router_options"] = {**(moe.get("router_options") or {}), key: draw(SCALARS)}
        return kind, raw, f"moe.router_options.{key}"
    elif kind == "option_value":
        router = moe.get("router", "topk")
        if not OPTIONS[router]:
            return kind, {**raw, "moe": {**moe, "router_options": {"x": 1}}}, "moe.router_options.x"
        key = draw(st.sampled_from(sorted(OPTIONS[router])))
        value = draw(st.one_of(st.sampled_from([math.nan, math.inf, -math.inf]), st.text(min_size=1, max_size=8)))
        moe["router_options"] = {**(moe.get("router_options") or {}), key: value}
        return kind, raw, f"moe.router_options.{key}"
    else:
        section, key = "data", "files"
        name = draw(st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=10))
        raw.setdefault("data", {})["files"] = [f"/nonexistent/{name}{draw(st.sampled_from(['.txt', '.jsonl', '.csv', '']))}"]
    return kind, raw, key if section is None else f"{section}.{key}"


BAD_FILES = st.one_of(
    st.tuples(st.just("bad_yaml"), st.sampled_from([b"train: [1, 2\n", b"model:\n  d_model: 1\n d: 2\n", b"a: b: c\n",
                                                   b"{unclosed", b"- [\n", b"key: 'open\n", b"\t- tab\n",
                                                   b"train: !!python/object:os.system ls\n"])),
    st.tuples(st.just("empty"), st.sampled_from([b"", b"\n\n", b"# only a comment\n", b"---\n", b"~\n", b"null\n"])),
    st.tuples(st.just("list"), st.lists(st.integers(), max_size=3).map(lambda v: repr(v).encode())),
    st.tuples(st.just("scalar"), st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans())
              .map(lambda v: str(v).lower().encode())),
    st.tuples(st.just("non_utf8"), st.binary(min_size=1, max_size=20).map(lambda b: b"train:\n  lr: " + b + b"\xff\xfe")),
    st.tuples(st.just("text"), st.text(max_size=40).map(lambda t: t.encode("utf-8"))),
)


def assert_one_line(message: str, names: str) -> None:
    assert "\n" not in message and message.strip() == message and message, repr(message)
    assert names in message, (names, message)


def test_shipped_configs_are_valid_bases():
    for name, raw in BASES.items():
        config_from_dict(raw)


def test_malformed_configs_fail_in_one_line_naming_the_key(tmp_path):
    tried = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(broken_config())
    def check(case):
        kind, raw, names = case
        tried[kind] += 1
        with pytest.raises(ConfigError) as info:
            config_from_dict(raw)
        assert_one_line(str(info.value), names)

    check()
    print(f"\nconfig fuzz: {sum(tried.values())} malformed configs, {dict(sorted(tried.items()))}")
    assert set(tried) == set(KINDS)


def test_broken_config_files_fail_in_one_line_naming_the_file(tmp_path):
    tried = Counter()
    path = tmp_path / "run.yaml"

    @settings(max_examples=EXAMPLES // 3, deadline=None, database=None, derandomize=True)
    @given(BAD_FILES)
    def check(case):
        kind, content = case
        path.write_bytes(content)
        try:
            config = load_config(path)
        except ConfigError as error:
            message = str(error)
            try:
                parsed = read_yaml(path)
            except ConfigError:
                parsed = None
            keys = [str(k) for k in parsed] if isinstance(parsed, dict) else []  # a mapping: its key is named
            assert_one_line(message, "" if any(message.startswith(k) for k in keys) else str(path))
            tried[kind] += 1
            return
        assert kind == "text", (content, config)  # only text that happens to be a valid config may load
        tried["text (valid)"] += 1

    check()
    print(f"\nconfig file fuzz: {sum(tried.values())} files, {dict(sorted(tried.items()))}")
    assert {"bad_yaml", "empty", "list", "scalar", "non_utf8"} <= set(tried)
