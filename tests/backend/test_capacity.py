"""Capacity dispatch on the backend under test, with random and adversarial (skewed)
routings and both drop policies: no expert ever takes more than C assignments, each
expert takes exactly min(requested, C), every kept assignment has its own buffer row
inside its expert's block, and the kept set is the reference's (slot-major priority for
``position``, largest weight first for ``probability``). At layer level: tokens whose
every assignment was dropped come back unchanged through the residual, partially dropped
tokens get only their kept experts, and dropless equals capacity mode when C is large
enough that nothing drops."""
import numpy as np
import pytest

from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from tests.support.probes import CapacityProbe
from tests.support import reference as ref
from tests.support.harness import numpy_weights, random_inputs

POLICIES = ["position", "probability"]


def routing(kind: str, num_tokens: int, num_experts: int, num_null: int, k: int, seed: int) -> np.ndarray:
    """expert ids [T, k] (distinct per token) for a named distribution over n + m slots."""
    rng = np.random.default_rng(seed)
    slots = num_experts + num_null
    if kind == "all_same":  # every token: first choice 0, second 1, ...
        return np.tile(np.arange(k), (num_tokens, 1))
    if kind == "uniform":
        p = np.full(slots, 1.0 / slots)
    elif kind == "zipf":
        p = 1.0 / (np.arange(slots) + 1.0) ** 2
    elif kind == "null_heavy":
        p = np.r_[np.full(num_experts, 1.0), np.full(num_null, 4.0)]
    else:
        raise ValueError(kind)
    return np.stack([rng.choice(slots, k, replace=False, p=p / p.sum()) for _ in range(num_tokens)])


CASES = [  # (kind, n, m, k, T, capacity)
    ("all_same", 4, 0, 2, 16, 3),
    ("all_same", 4, 0, 1, 16, 1),
    ("uniform", 4, 0, 2, 32, 5),
    ("zipf", 6, 0, 3, 40, 4),
    ("zipf", 4, 0, 2, 16, 16),
    ("uniform", 4, 4, 3, 24, 2),
    ("null_heavy", 3, 5, 4, 20, 3),
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_capacity_plan(runner, case, policy):
    kind, n, m, k, num_tokens, capacity = case
    index = routing(kind, num_tokens, n, m, k, seed=len(kind) + k)
    weight = np.random.default_rng(7).permutation(num_tokens * k).reshape(num_tokens, k) / (num_tokens * k) + 0.01
    weight = weight.astype(np.float32)  # distinct, so "largest weight first" has one answer
    probe = CapacityProbe(n, n + m, k, capacity, policy)
    dest, aux = runner.forward(probe, {}, np.concatenate([index, weight], 1).astype(np.float32))
    kept = aux["kept"] > 0.5
    token = aux["token"].astype(int)
    dest = dest.astype(int)
    expert = dest // capacity

    assert np.all(dest[~kept] == n * capacity), "dropped and null assignments go to the dummy row"
    assert len(set(dest[kept])) == kept.sum(), "two kept assignments share a buffer row"
    assert np.all((dest[kept] >= 0) & (dest[kept] < n * capacity))
    requested = ref.assignment_counts(index[index < n], n)
    processed = np.bincount(expert[kept], minlength=n)
    assert np.all(processed <= capacity)
    np.testing.assert_array_equal(processed, np.minimum(requested, capacity))
    np.testing.assert_array_equal(aux["tokens_per_expert"], processed)
    # every kept (token, expert) pair was requested with the weight carried along
    pairs = {(t, e): w for t, e, w in zip(token[kept], expert[kept], aux["weight"][kept])}
    for (t, e), w in pairs.items():
        assert e in index[t]
        assert w == weight[t, list(index[t]).index(e)]
    expected = ref.keep_mask(index, weight, n, capacity, policy)
    assert set(pairs) == {(t, int(index[t, j])) for t, j in zip(*np.nonzero(expected))}


def skewed_case(router: dict, policy: str, seed: int):
    """A skewed routing (a shared feature pushes tokens to expert 0) on which capacity
    drops every assignment of some tokens and only some assignments of others."""
    config = MoEConfig(d_model=8, ffn_hidden=12, num_experts=4, dispatch="capacity", capacity_factor=0.5,
                       drop_policy=policy, router_init_std=0.5, expert_init_std=0.3, **router)
    layer = MoELayer(config)
    values = numpy_weights(layer, seed=seed)
    values["router.weight"][0] = [3.0, 1.5, 0.0, -1.0]
    x = random_inputs((12, 8), seed=seed + 100)
    x[:, 0] = np.abs(x[:, 0]) + 0.5
    return config, layer, values, x


def find_drops(router: dict, policy: str):
    """The first seed whose skewed case has fully and partially dropped tokens (by the reference)."""
    for seed in range(50):
        config, layer, values, x = skewed_case(router, policy, seed)
        plan = ref.layer_plan(x, values, config)
        true = plan["index"] < config.num_experts
        kept = plan["kept"].sum(-1)
        full = (kept == 0) & true.any(-1)
        partial = (kept > 0) & (kept < true.sum(-1))
        if full.any() and partial.any():
            return config, layer, values, x, plan, full, partial
    raise AssertionError("no seed gives both fully and partially dropped tokens")


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("router", [dict(router="topk", top_k=2), dict(router="adamoe", num_null_experts=2, top_k=3)],
                         ids=["topk", "adamoe"])
def test_dropped_tokens_pass_through_and_partial_drops_keep_only_kept_experts(runner, router, policy):
    config, layer, values, x, plan, full, partial = find_drops(router, policy)
    y, aux = runner.forward(layer, values, x)
    assert np.all(aux["tokens_per_expert"] <= plan["capacity"])
    assert np.all(y[full] == 0)
    np.testing.assert_array_equal((x + y)[full], x[full])
    only_kept = ref.combine(plan, values, config, plan["kept"])
    every_true = ref.combine(plan, values, config, plan["index"] < config.num_experts)
    np.testing.assert_allclose(y[partial], only_kept[partial], rtol=1e-5, atol=1e-6)
    assert np.abs(every_true[partial] - only_kept[partial]).max(-1).min() > 1e-3, \
        "the dropped experts' share must be visible"


@pytest.mark.parametrize("dispatch", ["dropless", "capacity"])
def test_token_routed_only_to_null_experts_gets_zero(runner, dispatch):
    config = MoEConfig(d_model=8, ffn_hidden=12, num_experts=4, num_null_experts=4, top_k=2, router="adamoe",
                       dispatch=dispatch, capacity_factor=4.0, expert_init_std=0.3)
    layer = MoELayer(config)
    values = numpy_weights(layer, seed=31)
    values["router.null_weight"][0] = 4.0  # feature 0 > 0 sends a token to nulls only
    values["router.weight"][0] = -4.0
    x = random_inputs((10, 8), seed=32)
    x[:, 0] = np.where(np.arange(10) % 2 == 0, 2.0, -2.0)
    plan = ref.layer_plan(x, values, config)
    null_only = ~(plan["index"] < config.num_experts).any(-1)
    np.testing.assert_array_equal(null_only, np.arange(10) % 2 == 0)  # the construction worked
    y, aux = runner.forward(layer, values, x)
    assert np.all(y[null_only] == 0)
    np.testing.assert_array_equal((x + y)[null_only], x[null_only])
    assert np.abs(y[~null_only]).max(-1).min() > 1e-3
    true = plan["index"] < config.num_experts
    assert aux["mean_true_experts_per_token"] == pytest.approx(true.sum() / 10)
    np.testing.assert_array_equal(aux["tokens_per_expert"], ref.assignment_counts(plan["index"][true], 4))


@pytest.mark.parametrize("router", [dict(router="topk", top_k=2), dict(router="switch", top_k=1),
                                    dict(router="adamoe", num_null_experts=4, top_k=4)],
                         ids=["topk", "switch", "adamoe"])
def test_dropless_equals_capacity_without_drops(runner, router):
    """C = ceil(cf T k / S) >= T when cf = S / k: no expert can overflow."""
    layers = {}
    for dispatch in ("dropless", "capacity"):
        config = MoEConfig(d_model=8, ffn_hidden=12, num_experts=4, dispatch=dispatch, expert_init_std=0.3,
                           router_init_std=0.5, capacity_factor=(4 + router.get("num_null_experts", 0)) / router["top_k"],
                           **router)
        layers[dispatch] = MoELayer(config)
    values = numpy_weights(layers["dropless"], seed=41)
    x = random_inputs((16, 8), seed=42)
    cot = random_inputs((16, 8), seed=43)
    a = runner.forward_backward(layers["dropless"], values, x, cot)
    b = runner.forward_backward(layers["capacity"], values, x, cot)
    assert b["aux"]["dropped_fraction"] == 0
    np.testing.assert_allclose(a["y"], b["y"], rtol=1e-5, atol=1e-6)
    for key in a["aux"]:
        if key != "expert_flops":  # capacity pays for all E*C buffer rows
            np.testing.assert_allclose(a["aux"][key], b["aux"][key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert b["aux"]["expert_flops"] >= a["aux"]["expert_flops"]
    np.testing.assert_allclose(a["grad_x"], b["grad_x"], rtol=1e-5, atol=1e-6)
    for name in a["grads"]:
        np.testing.assert_allclose(a["grads"][name], b["grads"][name], rtol=1e-5, atol=1e-6, err_msg=name)
