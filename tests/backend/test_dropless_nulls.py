"""Dropless dispatch with null experts (AdaMoE): the null assignments are cut off before
any row is gathered (models/dispatch/dropless.py), and the layer's output and gradients are
those of the same layer with capacity dispatch and room for every assignment (no drops, no
cut), including a batch in which every assignment is null."""
import numpy as np
import pytest

from models.dispatch.dropless import dropless_plan
from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from models.routers.context import routing_context
from tests.support.harness import numpy_weights, random_inputs

TOKENS, K = 24, 4


def adamoe(dispatch: str) -> MoELayer:
    """8 slots (4 true, 4 null), top-4; capacity factor 2 gives C = 24 = T: nothing dropped."""
    return MoELayer(MoEConfig(d_model=8, ffn_hidden=12, num_experts=4, num_null_experts=4, top_k=K, router="adamoe",
                              dispatch=dispatch, capacity_factor=2.0, router_init_std=0.6, expert_init_std=0.3,
                              balance_loss_coef=0.1, z_loss_coef=0.01))


class PlanProbe:
    """The router plus ``dropless_plan``: forward(x) -> (x, aux) with the plan's rows."""

    def __init__(self, layer: MoELayer) -> None:
        self.layer = layer

    def param_specs(self):
        return self.layer.router.param_specs()

    def check_inputs(self, x) -> None:
        return None

    def forward(self, F, params, x):
        c = self.layer.config
        routing = self.layer.router.route(F, params, x, routing_context())
        plan = dropless_plan(F, routing["expert_index"], routing["expert_weight"], c.num_experts, c.num_slots)
        return x, {"token": F.cast(plan["token"], F.float32), "weight": plan["weight"],
                   "index": F.cast(routing["expert_index"], F.float32), "loss": F.zeros((), F.float32)}


def test_null_assignments_are_not_gathered(runner):
    layer = adamoe("dropless")
    x = random_inputs((TOKENS, 8), seed=1)
    _, aux = runner.forward(PlanProbe(layer), numpy_weights(layer, seed=2), x)
    index = aux["index"].astype(int)
    true = int((index < 4).sum())
    assert 0 < true < TOKENS * K - 1, "the case must have null assignments"
    assert aux["token"].shape == (true + 1,)
    expected = sorted(t for t, e in zip(np.tile(np.arange(TOKENS), K), index.T.ravel()) if e < 4)
    assert sorted(aux["token"][:true].astype(int).tolist()) == expected
    assert aux["weight"][true] == 0.0


def all_null_weights(values: dict) -> dict:
    """True gate 0, null gate large and positive: with x > 0 every token picks 4 nulls."""
    return dict(values, **{"router.weight": np.zeros_like(values["router.weight"]),
                           "router.null_weight": np.full_like(values["router.null_weight"], 2.0)})


@pytest.mark.parametrize("every_null", [False, True])
def test_dropless_equals_capacity_without_drops(runner, every_null):
    x = random_inputs((TOKENS, 8), seed=3)
    values = numpy_weights(adamoe("dropless"), seed=4)
    if every_null:
        x, values = np.abs(x) + 0.1, all_null_weights(values)
    cot = random_inputs((TOKENS, 8), seed=5)
    out = {d: runner.forward_backward(adamoe(d), values, x, cot) for d in ("dropless", "capacity")}
    true_per_token = out["dropless"]["aux"]["mean_true_experts_per_token"]
    if every_null:
        assert true_per_token == 0.0 and np.abs(out["dropless"]["y"]).max() == 0.0
        assert all(out[d]["aux"]["dropped_fraction"] == 0.0 for d in out)  # nothing asked, nothing dropped
    else:
        assert 0.5 < true_per_token < K - 0.5 and out["capacity"]["aux"]["dropped_fraction"] == 0.0
    np.testing.assert_allclose(out["dropless"]["y"], out["capacity"]["y"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["dropless"]["grad_x"], out["capacity"]["grad_x"], rtol=1e-5, atol=1e-6)
    for name, grad in out["capacity"]["grads"].items():
        np.testing.assert_allclose(out["dropless"]["grads"][name], grad, rtol=1e-5, atol=1e-6, err_msg=name)
