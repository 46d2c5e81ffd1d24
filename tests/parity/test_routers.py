"""Every registered router, built from its config at test size (tests/support/router_cases.py):
torch and MindSpore, from the same weights, inputs, side inputs and routing noise, give the
same outputs, aux values and gradients (PARITY_RTOL / PARITY_ATOL of tests/support/harness.py).

GRAPH_MODE: each case compiles twice there, so a router whose options and dispatch modes a
hand-written parity file already compiles (COMPILED_ELSEWHERE) runs its config case in
PyNative only; any other router, a new one included, runs in both."""
import pytest

from tests.parity import test_layer as layer_cases
from tests.parity import test_locmoe_routers as locmoe_cases
from tests.parity import test_router_options as option_cases
from tests.parity import test_sampled_routers as sampled_cases
from tests.support.harness import assert_runs_match, random_inputs
from tests.support.parity_cases import graph_subset
from tests.support.router_cases import ROUTER_NAMES, router_case

COMPILED_ELSEWHERE = ("adamoe", "switch", "topk", "aux_free", "expert_choice", "hash", "rre", "locmoe", "locmoe_plus",
                      "balanced", "skip")


@pytest.mark.parametrize("name", graph_subset(ROUTER_NAMES, ROUTER_NAMES,
                                              [n for n in ROUTER_NAMES if n not in COMPILED_ELSEWHERE]))
def test_router_parity(torch_runner, ms_runner, name):
    layer, values, x, context = router_case(name)
    cot = random_inputs(x.shape, seed=5)
    a = torch_runner.forward_backward(layer, values, x, cot, context)
    b = ms_runner.forward_backward(layer, values, x, cot, context)
    assert_runs_match(a, b)


def test_routers_compiled_elsewhere_have_graph_cases():
    """Each router in COMPILED_ELSEWHERE names a GRAPH_MODE case of a hand-written file."""
    in_graph = [case for module in (layer_cases, locmoe_cases, option_cases, sampled_cases)
                for case in module.IN_GRAPH]
    for name in COMPILED_ELSEWHERE:
        assert any(case.startswith(name + "-") for case in in_graph), name
