"""Every router in the registry (``models.routers.ROUTERS``, built from its config by
tests/support/router_cases.py) keeps all of its host-side state behind one contract,
``state_dict`` / ``load_state_dict``: a router that has taken a few steps (``after_step`` on
the aux of real forwards on the backend under test) and a fresh one that loaded its
JSON-round-tripped state are the same object, attribute for attribute (LocMoE's measured
capacity factor, LocMoE+'s refresh schedule); they report the same ``static_key``, return
the same ``after_step`` updates from then on and route the next batch alike. A router that
kept state outside the contract would resume differently from the uninterrupted run.

Parameters that ``after_step`` updates (aux_free's bias) are checkpointed as parameters and
carried over here the same way."""
import json

import numpy as np
import pytest

from models.moe_layer import MoELayer
from tests.support.harness import random_inputs
from tests.support.router_cases import ROUTER_NAMES, router_case

STEPS = 3


def host_state(value, seen=None):
    """Everything an object holds on the host, as plain comparable values: attributes of
    objects (recursively), containers, numbers, strings, arrays (as lists); functions and
    methods are code, not state, and are left out."""
    seen = set() if seen is None else seen
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if callable(value) and not hasattr(value, "__dict__"):
        return "<code>"
    if isinstance(value, (list, tuple)):
        return [host_state(v, seen) for v in value]
    if isinstance(value, dict):
        return {str(k): host_state(v, seen) for k, v in value.items()}
    if type(value).__name__ in ("function", "method", "builtin_function_or_method"):
        return "<code>"
    if id(value) in seen:
        return "<seen>"
    seen.add(id(value))
    return {"type": type(value).__name__,
            **{k: host_state(v, seen) for k, v in sorted(vars(value).items()) if not callable(v)}}


def step(runner, layer, values, seed):
    """One forward on the backend, then the router's after_step (its updates applied)."""
    _, base_values, x, context = router_case(layer.router.name, seed=seed)
    _, aux = runner.forward(layer, values, x, context)
    own = {name: values[name] for name in layer.router.param_specs()}
    updates = layer.router.after_step(own, aux)
    values.update({name: np.asarray(value) for name, value in updates.items()})
    return updates


@pytest.mark.parametrize("name", ROUTER_NAMES)
def test_router_host_state_round_trips_through_its_contract(runner, name):
    layer, values, x, context = router_case(name)
    values = dict(values)
    for seed in range(STEPS):
        step(runner, layer, values, seed + 10)
    fresh = MoELayer(layer.config)
    state = json.loads(json.dumps(layer.router.state_dict()))  # as a checkpoint stores it
    fresh.router.load_state_dict(state)
    assert host_state(fresh.router) == host_state(layer.router), (
        f"router {name!r} keeps host state that state_dict() does not carry")
    assert fresh.static_key() == layer.static_key()
    resumed = dict(values)
    for seed in range(STEPS, STEPS + 2):
        a = step(runner, layer, values, seed + 10)
        b = step(runner, fresh, resumed, seed + 10)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(b[key], a[key], err_msg=key)
        assert host_state(fresh.router) == host_state(layer.router)
    noise = random_inputs(x.shape, seed=99)
    ya, _ = runner.forward(layer, values, noise, context)
    yb, _ = runner.forward(fresh, resumed, noise, context)
    np.testing.assert_array_equal(yb, ya)
