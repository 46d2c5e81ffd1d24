"""Every registered router, built from its config at test size (tests/support/router_cases.py),
on the backend under test: its MoE layer runs forward and backward with finite outputs, aux
values and gradients (one for every trainable parameter), and its routing keeps the contract
of its ``dispatch_mode``. ``slots``: route() returns slot_token and slot_weight [E, C], no
expert takes a token twice and the layer's load is the filled slots. Otherwise route()
returns expert_index and expert_weight [T, top_k] with top_k different slots per token;
``capacity`` never processes more than C = moe.capacity(T) tokens per expert, ``dropless``
processes every true assignment."""
import numpy as np
import pytest

from models.dispatch.slots import SLOT_DISPATCH
from models.moe_layer import DISPATCHERS
from tests.support.harness import random_inputs
from tests.support.probes import RouterProbe
from tests.support.router_cases import ROUTER_NAMES, router_case


@pytest.mark.parametrize("name", ROUTER_NAMES)
def test_layer_runs_forward_and_backward(runner, name):
    layer, values, x, context = router_case(name)
    out = runner.forward_backward(layer, values, x, random_inputs(x.shape, seed=5), context)
    assert np.isfinite(out["y"]).all() and np.isfinite(out["loss"])
    for key, value in out["aux"].items():
        assert np.isfinite(value).all(), key
    assert out["grads"].keys() == {n for n, spec in layer.param_specs().items() if spec.trainable}
    for key, grad in dict(out["grads"], x=out["grad_x"]).items():
        assert np.isfinite(grad).all(), key
    assert np.abs(out["grad_x"]).max() > 0


@pytest.mark.parametrize("name", ROUTER_NAMES)
def test_routing_keeps_the_dispatch_contract(runner, name):
    layer, values, x, context = router_case(name)
    c, mode = layer.config, layer.router.dispatch_mode
    assert isinstance(layer.dispatcher, DISPATCHERS[mode])
    num_tokens = x.shape[0] * x.shape[1]
    load = runner.forward(layer, values, x, context)[1]["tokens_per_expert"]
    if mode == SLOT_DISPATCH:
        weight, routing = runner.forward(RouterProbe(layer, "slot_weight", ["slot_token"]), values, x, context)
        slots = routing["slot_token"].astype(int)
        assert slots.shape == weight.shape and slots.shape[0] == c.num_experts
        assert slots.min() >= 0 and slots.max() <= num_tokens  # num_tokens marks an empty slot
        filled = [row[row < num_tokens] for row in slots]
        assert all(len(set(row)) == len(row) for row in filled)
        np.testing.assert_array_equal(load, [len(row) for row in filled])
        return
    weight, routing = runner.forward(RouterProbe(layer, "expert_weight", ["expert_index"]), values, x, context)
    index = routing["expert_index"].astype(int)
    assert index.shape == weight.shape == (num_tokens, c.top_k)
    assert index.min() >= 0 and index.max() < c.num_slots
    assert all(len(set(row)) == c.top_k for row in index)
    requested = np.bincount(index[index < c.num_experts], minlength=c.num_experts)
    if mode == "capacity":
        assert load.max() <= c.capacity(num_tokens) and np.all(load <= requested)
    else:
        np.testing.assert_array_equal(load, requested)
