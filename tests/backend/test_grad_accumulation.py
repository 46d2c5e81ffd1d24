"""Gradient accumulation on the backend under test: a step over k equal micro-batches
equals one step over the whole batch (loss, gradient norm, weights and AdamW moments after
the update) when the objective is a mean over the slices and nothing is computed over the
batch as a whole; a load-balancing loss is such a batch-level term, and with it the two
differ (so the micro-batches really are separate forward passes)."""
import numpy as np
import pytest

from backends.train_step import make_train_step
from core.errors import ConfigError
from tests.support.harness import numpy_weights
from tests.support.train_fixtures import fixed_batch, regression_objective, tiny_layer

RTOL, ATOL = 2e-5, 1e-6


def one_step(runner, micro_batches: int, balance: float):
    layer = tiny_layer(router="topk", balance_loss_coef=balance, z_loss_coef=0.0)
    module = runner.module(layer, numpy_weights(layer, seed=11))
    step = make_train_step(runner.name, module, regression_objective, lr=1e-2, grad_clip=0.5)
    x, target = fixed_batch(seed=12, shape=(4, 6, 8))
    loss, metrics, norm = step.step((x,), (target,), lr=1e-2, micro_batches=micro_batches)
    return loss, metrics, norm, module.numpy_params(), step.optimizer_state()


def test_micro_batches_equal_the_whole_batch(runner):
    whole = one_step(runner, 1, 0.0)
    accumulated = one_step(runner, 4, 0.0)
    np.testing.assert_allclose(accumulated[0], whole[0], rtol=RTOL)
    np.testing.assert_allclose(accumulated[2], whole[2], rtol=RTOL)
    np.testing.assert_allclose(accumulated[1]["mse"], whole[1]["mse"], rtol=RTOL)
    for group in (3, 4):
        for name, value in whole[group].items():
            np.testing.assert_allclose(accumulated[group][name], value, rtol=RTOL, atol=ATOL, err_msg=name)


def test_a_batch_level_loss_tells_them_apart(runner):
    if runner.name != "torch":
        pytest.skip("checks the test's power, not a backend: run once, on torch")
    whole, accumulated = one_step(runner, 1, 0.5), one_step(runner, 2, 0.5)
    assert abs(accumulated[2] - whole[2]) > 1e-4 * whole[2]


def test_slices_must_divide_the_batch(runner):
    with pytest.raises(ConfigError, match="train.grad_accum=3"):
        one_step(runner, 3, 0.0)
