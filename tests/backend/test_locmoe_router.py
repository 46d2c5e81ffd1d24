"""LocMoE and LocMoE+ routers on the backend under test, against numpy references: the
paper's gate ReLU(GrAP(x) + eps) on a hand-computed example, the GrAP and dense ablations,
top-1 routing, locality loss and own-node share, per-device capacity, token/expert
choice, and the LocMoE+ capacity following the measured delta_max."""
import math

import numpy as np
import pytest
from scipy.special import softmax

from core.topology import Topology
from models.capacity_bound import large_d_capacity_bound
from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from tests.support.harness import numpy_weights, random_inputs
from tests.support.probes import RouterProbe

D, E = 16, 4
TOPOLOGY = {"nodes": 2, "devices_per_node": 2}


def layer(router="locmoe", top_k=1, d_model=D, num_experts=E, dispatch="dropless", capacity_factor=1.25,
          **options) -> MoELayer:
    return MoELayer(MoEConfig(d_model=d_model, ffn_hidden=8, num_experts=num_experts, top_k=top_k, router=router,
                              dispatch=dispatch, capacity_factor=capacity_factor, expert_type="gelu",
                              router_options=options))


def slice_means(x: np.ndarray, n: int) -> np.ndarray:
    tokens = x.reshape(-1, x.shape[-1])
    return tokens.reshape(tokens.shape[0], n, -1).mean(-1)


def grap_cosine(x: np.ndarray, n: int) -> np.ndarray:
    tokens = x.reshape(-1, x.shape[-1])
    w = np.kron(np.eye(n), np.ones(tokens.shape[1] // n)) / math.sqrt(tokens.shape[1] / n)
    return tokens @ w.T / np.linalg.norm(tokens, axis=1, keepdims=True)


def learned_gate(values: dict, x: np.ndarray):
    """(probs = softmax(ReLU(x W + b)), chosen expert = argmax of the pre-activation x W + b)."""
    tokens = x.reshape(-1, x.shape[-1]).astype(np.float64)
    pre = tokens @ values["router.weight"] + values["router.bias"]
    return softmax(np.maximum(pre, 0.0), axis=-1), pre.argmax(-1)


def numpy_locality(probs: np.ndarray, topology: Topology, divergence: str, eps: float) -> float:
    """Mean over nodes of KL(D_c || (1-eps) D_l + eps/n) or KL(D_l || D_c), written directly."""
    n, m = topology.num_experts, topology.experts_per_node
    values = []
    for node, (start, end) in enumerate(topology.node_token_ranges(probs.shape[0])):
        d_c = probs[start:end].mean(0)
        d_l = (topology.expert_nodes() == node) / m
        if divergence == "forward":
            target = (1 - eps) * d_l + eps / n
            values.append(np.sum(d_c * np.log(d_c / target)))
        else:
            local = d_l > 0
            values.append(np.sum(d_l[local] * np.log(d_l[local] / d_c[local])))
    return float(np.mean(values))


def test_default_gate_is_relu_of_grap_plus_bias_by_hand(runner):
    """G_i = ReLU(GrAP(x)_i + eps_i), p = softmax(G), expert = argmax of the pre-activation,
    worked by hand for d = 4, n = 2 (slices x[0:2], x[2:4]) and eps = (0.5, -0.5)."""
    moe = layer(d_model=4, num_experts=2)
    x = np.array([[1.0, 3.0, -2.0, 0.5],      # means (2, -0.75)  -> pre (2.5, -1.25) -> G (2.5, 0)
                  [-1.0, -3.0, 2.0, 2.0],     # means (-2, 2)     -> pre (-1.5, 1.5)  -> G (0, 1.5)
                  [1.0, 1.0, 1.4, 1.4],       # means (1, 1.4)    -> pre (1.5, 0.9)   -> G (1.5, 0.9)
                  [-1.0, -1.0, -1.0, -1.0],   # means (-1, -1)    -> pre (-0.5, -1.5) -> G (0, 0)
                  [-4.0, -4.0, -1.0, -1.0]],  # means (-4, -1)    -> pre (-3.5, -1.5) -> G (0, 0)
                 np.float32)
    logits = np.array([[2.5, 0.0], [0.0, 1.5], [1.5, 0.9], [0.0, 0.0], [0.0, 0.0]])
    # softmax of two values: p_first = 1 / (1 + e^(second - first)); e^-2.5 = 0.0820850,
    # e^-1.5 = 0.2231302, e^-0.6 = 0.5488116
    first = np.array([1 / 1.0820850, 0.2231302 / 1.2231302, 1 / 1.5488116, 0.5, 0.5])
    probs = np.stack([first, 1 - first], -1)
    expert = np.array([0, 1, 0, 0, 1])  # row 2: bare GrAP would pick 1; rows 3, 4: G ties, broken by pre
    values = {"router.bias": np.array([0.5, -0.5], np.float32)}
    weight, aux = runner.forward(RouterProbe(moe, "expert_weight", ["expert_index", "logits", "probs"]), values, x)
    np.testing.assert_allclose(aux["logits"], logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(aux["probs"], probs, rtol=1e-5)
    np.testing.assert_array_equal(aux["expert_index"][:, 0], expert)
    np.testing.assert_allclose(weight[:, 0], [0.9241418, 0.8175745, 0.6456563, 0.5, 0.5], rtol=1e-5)


def test_grap_logits_are_slice_means(runner):
    moe = layer(gate="grap")
    x = random_inputs((2, 6, D), seed=1)
    logits, _ = runner.forward(RouterProbe(moe, "logits"), {}, x)
    np.testing.assert_allclose(logits, slice_means(x, E), rtol=1e-5, atol=1e-6)


def test_learned_gate_routes_top1_with_its_probability(runner):
    moe = layer(gate="learned")
    values = numpy_weights(moe, seed=2)
    values["router.bias"] = np.array([-0.4, -0.2, -0.3, -0.25], np.float32)
    x = random_inputs((3, 7, D), seed=3)
    weight, aux = runner.forward(RouterProbe(moe, "expert_weight", ["expert_index", "probs"]), values, x)
    probs, chosen = learned_gate(values, x)
    np.testing.assert_allclose(aux["probs"], probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(aux["expert_index"][:, 0], chosen)
    np.testing.assert_allclose(weight[:, 0], probs[np.arange(len(chosen)), chosen], rtol=1e-5)
    ties = (probs.max(-1, keepdims=True) - probs < 1e-12).sum(-1) > 1
    assert ties.any()  # tokens whose every gate is ReLU'd to 0: broken by the pre-activation
    unique = ~ties
    np.testing.assert_array_equal(chosen[unique], probs[unique].argmax(-1))


@pytest.mark.parametrize("divergence", ["forward", "reverse"])
@pytest.mark.parametrize("tokens", [32, 13])
def test_locality_loss_and_own_node_share_match_numpy(runner, divergence, tokens):
    moe = layer(gate="learned", topology=TOPOLOGY, locality_coef=0.5, locality_divergence=divergence,
                locality_epsilon=0.05)
    values = numpy_weights(moe, seed=4)
    values["router.weight"] *= 20.0  # a confident gate, so the loss is far from its uniform value
    x = random_inputs((1, tokens, D), seed=5)
    _, aux = runner.forward(moe, values, x)
    topology = Topology.from_config(TOPOLOGY, E)
    probs, chosen = learned_gate(values, x)
    expected = numpy_locality(probs, topology, divergence, 0.05)
    np.testing.assert_allclose(aux["locality_loss"], expected, rtol=1e-4)
    local = topology.expert_nodes()[chosen] == topology.token_nodes(tokens)
    np.testing.assert_allclose(aux["own_node_share"], local.mean(), rtol=1e-6)
    np.testing.assert_allclose(aux["loss"], 0.01 * aux["balance_loss"] + 0.5 * expected, rtol=1e-4)


def test_capacity_is_per_device_and_expert_first_come(runner):
    moe = layer(gate="learned", dispatch="capacity", capacity_factor=0.6, capacity_policy="factor",
                topology=TOPOLOGY, locality_coef=0.0)
    values = numpy_weights(moe, seed=6)
    x = random_inputs((4, 8, D), seed=7)
    probe = RouterProbe(moe, "slot_token", ["slot_weight"])
    slot_token, aux = runner.forward(probe, values, x)
    tokens = 32
    capacity = math.ceil(tokens * 0.6 / (4 * E))
    assert slot_token.shape == (E, 4 * capacity)
    probs, chosen = learned_gate(values, x)
    expected_token = np.full((E, 4 * capacity), tokens)
    expected_weight = np.zeros((E, 4 * capacity))
    for device, (start, end) in enumerate(Topology.from_config(TOPOLOGY, E).device_token_ranges(tokens)):
        for e in range(E):
            mine = [t for t in range(start, end) if chosen[t] == e][:capacity]
            expected_token[e, device * capacity: device * capacity + len(mine)] = mine
            expected_weight[e, device * capacity: device * capacity + len(mine)] = probs[mine, e]
    np.testing.assert_array_equal(slot_token, expected_token)
    np.testing.assert_allclose(aux["slot_weight"], expected_weight, rtol=1e-5, atol=1e-7)
    _, layer_aux = runner.forward(moe, values, x)
    kept = int((expected_token < tokens).sum())
    np.testing.assert_allclose(layer_aux["dropped_fraction"], 1 - kept / tokens, rtol=1e-6)


def numpy_locmoe_plus(x: np.ndarray, top_k: int, threshold: float, capacity: int):
    """TCR then ECR, written directly from the definitions."""
    affinity = grap_cosine(x, E)
    probs = softmax(slice_means(x, E).astype(np.float64), axis=-1)
    tokens = affinity.shape[0]
    chosen = np.zeros_like(affinity)
    for t in range(tokens):
        positive = np.maximum(affinity[t], 0)
        total, cumulative = max(positive.sum(), 1e-12), 0.0
        for rank, e in enumerate(np.argsort(-affinity[t])[:top_k]):
            if rank > 0 and (cumulative >= threshold or affinity[t, e] <= 0):
                break
            chosen[t, e] = 1
            cumulative += positive[e] / total
    weight = probs * chosen
    weight /= weight.sum(-1, keepdims=True)
    slots = {}
    for e in range(E):
        candidates = [t for t in np.argsort(-affinity[:, e]) if chosen[t, e]][:capacity]
        slots[e] = {t: weight[t, e] for t in candidates}
    return chosen, slots


@pytest.mark.parametrize("threshold", [0.4, 0.9])
def test_locmoe_plus_token_then_expert_choice_matches_numpy(runner, threshold):
    moe = layer("locmoe_plus", top_k=3, capacity_factor=0.75, capacity_policy="factor", token_threshold=threshold)
    x = random_inputs((2, 12, D), seed=8)
    capacity = math.ceil(24 * 0.75 / E)
    slot_token, aux = runner.forward(RouterProbe(moe, "slot_token", ["slot_weight"]), {}, x)
    chosen, slots = numpy_locmoe_plus(x, 3, threshold, capacity)
    assert slot_token.shape == (E, capacity)
    for e in range(E):
        got = {int(t): w for t, w in zip(slot_token[e], aux["slot_weight"][e]) if t < 24}
        assert got.keys() == slots[e].keys()
        np.testing.assert_allclose([got[t] for t in sorted(got)], [slots[e][t] for t in sorted(got)], rtol=1e-5)
    _, layer_aux = runner.forward(moe, numpy_weights(moe), x)
    np.testing.assert_allclose(layer_aux["mean_true_experts_per_token"], chosen.sum() / 24, rtol=1e-6)
    kept = sum(len(s) for s in slots.values())
    np.testing.assert_allclose(layer_aux["dropped_fraction"], 1 - kept / chosen.sum(), rtol=1e-5)


def tokens_with_affinity(delta: float, tokens: int, d: int, n: int, seed: int) -> np.ndarray:
    """Unit tokens with cos(x_t, w_{t mod n}) = delta and cos 0 with every other GrAP vector:
    delta * w_i plus a unit component with zero mean on every slice."""
    rng = np.random.default_rng(seed)
    w = np.kron(np.eye(n), np.ones(d // n)) / math.sqrt(d / n)
    noise = rng.standard_normal((tokens, d))
    noise -= noise @ w.T @ w
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    x = delta * w[np.arange(tokens) % n] + math.sqrt(1 - delta ** 2) * noise
    return x.reshape(1, tokens, d).astype(np.float32)


def test_locmoe_plus_capacity_follows_measured_delta_max(runner):
    d, n, tokens = 64, 8, 64
    moe = layer("locmoe_plus", top_k=2, d_model=d, num_experts=n, capacity_factor=1.0, capacity_interval=1)
    values = numpy_weights(moe)
    capacities = []
    for step, delta in enumerate([0.15, 0.2, 0.25, 0.3]):
        x = tokens_with_affinity(delta, tokens, d, n, seed=step)
        _, aux = runner.forward(moe, values, x)
        np.testing.assert_allclose(aux["affinity_max"], delta, rtol=1e-4)
        moe.router.after_step(values, aux)
        expected = min(tokens, math.ceil(tokens * large_d_capacity_bound(delta, d, n) / n))
        assert moe.router.capacity(tokens) == expected
        slot_token, _ = runner.forward(RouterProbe(moe, "slot_token"), values, x)
        assert slot_token.shape == (n, expected)
        _, aux = runner.forward(moe, values, x)
        assert aux["tokens_per_expert"].max() <= expected
        capacities.append(expected)
    assert capacities == sorted(capacities) and capacities[0] < capacities[-1]


def test_locmoe_plus_processes_fewer_tokens_per_expert_than_the_capacity_factor_baseline(runner):
    d, n, tokens = 64, 8, 128
    x = random_inputs((2, tokens // 2, d), seed=9)
    baseline = MoELayer(MoEConfig(d_model=d, ffn_hidden=8, num_experts=n, top_k=1, router="switch",
                                  dispatch="capacity", capacity_factor=1.0, expert_type="gelu"))
    _, base_aux = runner.forward(baseline, numpy_weights(baseline), x)
    plus = layer("locmoe_plus", top_k=1, d_model=d, num_experts=n, capacity_factor=1.0)
    values = numpy_weights(plus)
    _, first = runner.forward(plus, values, x)
    plus.router.after_step(values, first)  # capacity from the first batch's delta_max
    _, aux = runner.forward(plus, values, x)
    assert plus.router.capacity(tokens) < baseline.config.capacity(tokens)
    assert aux["tokens_per_expert"].max() <= plus.router.capacity(tokens)
    assert aux["tokens_per_expert"].sum() < 0.7 * base_aux["tokens_per_expert"].sum()
