"""MindSpore: forward + backward of the layer inside a function decorated with
``mindspore.jit`` (compiled, in PyNative mode) gives the numbers of the uncompiled
PyNative run (rtol 1e-5 / atol 1e-6: same kernels, possibly fused) and of the NumPy
reference. The dropless case leaves expert 0 without tokens (an empty group in the
compiled grouped matmul). Torch has no ms.jit: skipped there."""
import numpy as np
import pytest

from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from tests.support import reference as ref
from tests.support.harness import numpy_weights, random_inputs

RTOL, ATOL = 1e-5, 1e-6

CASES = {
    "adamoe-dropless-empty-expert": dict(router="adamoe", num_null_experts=4, top_k=3, dispatch="dropless"),
    "topk-capacity-probability": dict(router="topk", top_k=2, dispatch="capacity", drop_policy="probability",
                                      expert_type="gelu"),
}


def jit_forward_backward(module, x, cot, keys):
    import mindspore as ms

    def loss_fn(inputs):
        y, aux = module(inputs)
        return (y * cot).sum() + aux["loss"], y, tuple(aux[key] for key in keys)

    grad_fn = ms.value_and_grad(loss_fn, grad_position=0, weights=module.trainable_params(), has_aux=True)

    @ms.jit
    def step(inputs):
        return grad_fn(inputs)

    return step(x)


@pytest.mark.parametrize("case", CASES)
def test_jit_matches_pynative(runner, case):
    if runner.name != "mindspore":
        pytest.skip("mindspore.jit is MindSpore's compiler")
    import mindspore as ms
    if ms.get_context("mode") != ms.PYNATIVE_MODE:
        pytest.skip("compares ms.jit with the uncompiled PyNative run: MOE_MS_MODE=pynative")
    config = MoEConfig(d_model=8, ffn_hidden=12, num_experts=4, capacity_factor=0.5, expert_init_std=0.3,
                       router_init_std=0.5, **CASES[case])
    layer = MoELayer(config)
    values = numpy_weights(layer, seed=81)
    x = random_inputs((16, 8), seed=82)
    if config.dispatch == "dropless":
        x[:, 0] = np.abs(x[:, 0]) + 1.0
        values["router.weight"][0, 0] = -6.0
    cot = random_inputs((16, 8), seed=83)
    y_ref, aux_ref = ref.moe_layer(x, values, config)
    if config.dispatch == "dropless":
        assert aux_ref["tokens_per_expert"][0] == 0, "expert 0 must get no token"
    else:
        assert aux_ref["dropped_fraction"] > 0
    eager = runner.forward_backward(layer, values, x, cot)
    module = runner.module(layer, values)
    keys = sorted(eager["aux"])
    (loss, y, aux), (grad_x, grad_w) = jit_forward_backward(module, ms.Tensor(x), ms.Tensor(cot), keys)
    np.testing.assert_allclose(y.asnumpy(), eager["y"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(y.asnumpy(), y_ref, rtol=RTOL, atol=ATOL)
    assert float(loss.asnumpy()) == pytest.approx(eager["loss"], rel=RTOL, abs=ATOL)
    for key, value in zip(keys, aux):
        np.testing.assert_allclose(value.asnumpy(), eager["aux"][key], rtol=RTOL, atol=ATOL, err_msg=key)
    np.testing.assert_allclose(grad_x.asnumpy(), eager["grad_x"], rtol=RTOL, atol=ATOL)
    for parameter, grad in zip(module.trainable_params(), grad_w):
        np.testing.assert_allclose(grad.asnumpy(), eager["grads"][parameter.name], rtol=RTOL, atol=ATOL,
                                   err_msg=parameter.name)
