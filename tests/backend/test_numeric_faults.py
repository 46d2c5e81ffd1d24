"""Numerical faults on the backend under test: NaN/Inf in the inputs, a non-finite gradient
behind a finite loss, and float16 overflow each skip the step (weights and optimizer state
untouched) and count it in ``skipped``; the next clean step trains. Router logits of
+-1e4 keep probabilities, outputs, losses and gradients finite."""
import numpy as np
import pytest

from backends.train_step import make_train_step
from tests.support.harness import numpy_weights
from tests.support.probes import RouterProbe
from tests.support.train_fixtures import fixed_batch, regression_objective, tiny_layer

ROUTERS = [dict(router="topk"), dict(router="switch", top_k=1, dispatch="capacity"),
           dict(router="adamoe", num_null_experts=2), dict(router="aux_free")]


def objective(F, outputs, target, offset):
    """The regression objective plus sqrt(sum(0 * y) + offset): with offset 1 a constant of
    zero gradient; with offset 0 the loss stays finite but the gradient of sqrt at 0 is
    infinite, so every gradient is NaN."""
    loss, metrics = regression_objective(F, outputs, target)
    return loss + F.sqrt(F.sum(outputs[0] * 0.0) + offset), metrics


def snapshot(module, step):
    return ({k: v.copy() for k, v in module.numpy_params().items()},
            {k: np.asarray(v).copy() for k, v in step.optimizer_state().items()})


def assert_unchanged(before, after):
    for group_before, group_after in zip(before, after):
        for name, value in group_before.items():
            np.testing.assert_array_equal(group_after[name], value, err_msg=name)


def bad_inputs(x, fault):
    bad = x.copy()
    if fault == "nan_input":
        bad[0, 1, 2] = np.nan
    elif fault == "inf_input":
        bad[1, 0, 0] = np.inf
    else:
        bad = bad * np.float16(400)  # |x| <= ~1000: representable, but its squares exceed 65504
    return bad


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_non_finite_steps_are_skipped_and_counted(runner, dtype):
    """float32: NaN input, Inf input, NaN gradient behind a finite loss, after a good step (so
    the optimizer has state to keep); float16: an overflow as the first step (both backends'
    float16 AdamW turns NaN after its first update). Then one clean step trains."""
    x, target = (a.astype(dtype) for a in fixed_batch())
    clean = (target, np.float32(1.0))
    layer = tiny_layer()
    module = runner.module(layer, numpy_weights(layer, seed=0), dtype)
    step = make_train_step(runner.name, module, objective, lr=1e-2, betas=(0.9, 0.95), grad_clip=1.0)
    faults = ["nan_input", "inf_input", "nan_gradient"] if dtype == "float32" else ["float16_overflow"]
    if dtype == "float32":
        step.step((x,), clean, lr=1e-2)
    before = snapshot(module, step)
    for count, fault in enumerate(faults, start=1):
        if fault == "nan_gradient":
            loss, _, norm = step.step((x,), (target, np.float32(0.0)), lr=1e-2)
            assert np.isfinite(loss) and not np.isfinite(norm), (loss, norm)  # only the gradient is bad
        else:
            loss, _, norm = step.step((bad_inputs(x, fault),), clean, lr=1e-2)
            assert not (np.isfinite(loss) and np.isfinite(norm)), (fault, loss, norm)
        assert step.skipped == count, fault
        assert_unchanged(before, snapshot(module, step))
    loss, _, norm = step.step((x,), clean, lr=1e-2)
    assert np.isfinite(loss) and np.isfinite(norm) and step.skipped == len(faults)
    after = module.numpy_params()
    assert any(not np.array_equal(after[name], value) for name, value in before[0].items())


def extreme_router(moe: dict):
    """A layer whose router weights give |logits| up to ~1e4 on unit-scale inputs, its values, a batch."""
    layer = tiny_layer(**moe)
    values = numpy_weights(layer, seed=0)
    name = layer.router.prefix + "weight"
    values[name] = np.sign(np.random.default_rng(1).standard_normal(values[name].shape)).astype(np.float32) * 3e3
    return layer, values, fixed_batch()


@pytest.mark.parametrize("moe", ROUTERS, ids=lambda m: m["router"])
def test_extreme_router_logits_keep_probabilities_finite(runner, moe):
    layer, values, (x, _) = extreme_router(moe)
    logits, _ = runner.forward(RouterProbe(layer, "logits"), values, x)
    assert np.abs(logits).max() > 1e4
    probs, _ = runner.forward(RouterProbe(layer, "probs"), values, x)
    assert np.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1
    y, aux = runner.forward(layer, values, x)
    assert np.isfinite(y).all() and all(np.isfinite(v).all() for v in aux.values()), aux


def test_extreme_router_logits_train(runner):
    layer, values, (x, target) = extreme_router(ROUTERS[0])
    module = runner.module(layer, values)
    step = make_train_step(runner.name, module, regression_objective, lr=1e-2, betas=(0.9, 0.95), grad_clip=1.0)
    loss, metrics, norm = step.step((x,), (target,), lr=1e-2)
    assert np.isfinite(loss) and np.isfinite(norm) and step.skipped == 0, (loss, norm)
    assert all(np.isfinite(v).all() for v in metrics.values()), metrics
    assert all(np.isfinite(v).all() for v in module.numpy_params().values())
