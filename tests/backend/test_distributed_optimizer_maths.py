"""The distributed optimizer's AdamW (``parallel.distributed_optimizer``, written once on
``F``) is the framework's own AdamW: on one rank (shards = whole parameters, no
collectives) three steps with weight decay and a clip coefficient end on the same weights
and moments as ``torch.optim.AdamW`` / ``mindspore.experimental.optim.AdamW``. The
multi-process runs (tests/distributed) then check the sharding."""
import numpy as np

from backends.optimizer_layout import decays
from backends.train_step import make_train_step
from core.layout import ParallelLayout, ParallelRun
from parallel.distributed_optimizer import DistributedOptimizer
from tests.backend.test_train_step import BETAS, weights
from tests.support.harness import numpy_weights
from tests.support.train_fixtures import fixed_batch, regression_objective, tiny_layer

DECAY, EPS, COEF = 0.1, 1e-8, 0.5


def eager_step(runner):
    """The tiny layer's train step, forward and backward uncompiled (no compile to wait for)."""
    layer = tiny_layer()
    return make_train_step(runner.name, runner.module(layer, numpy_weights(layer, seed=1)), regression_objective,
                           lr=1e-2, betas=BETAS, eps=EPS, weight_decay=DECAY, execution="eager")


def test_sharded_adamw_is_the_framework_adamw(runner):
    plain, sharded = eager_step(runner), eager_step(runner)
    hooks, F = sharded.hooks, sharded.F
    one_rank = ParallelRun(runner.name, ParallelLayout(1, 0, 1, 1), {"world": None, "edp": None})
    params = hooks.parameters()
    shapes = [tuple(p.shape) for p in params]
    optimizer = DistributedOptimizer(F, one_rank, hooks.order, shapes, sharded.module.specs,
                                     [decays(s) for s in shapes], params, BETAS, EPS, DECAY, mixed=False)
    assert len(optimizer.buckets) == 2  # the router (replicated), the expert stacks
    for seed, lr in ((2, 1e-2), (3, 5e-3), (4, 2e-2)):
        x, target = fixed_batch(seed=seed)
        tensors = plain.hooks.tensors((x,), (target,))
        _, _, grads, _ = plain.hooks.gradients(1.0, 1, tensors)
        plain.hooks.apply(grads, lr, COEF)
        _, _, grads, norm = hooks.gradients(1.0, 1, hooks.tensors((x,), (target,)))
        shards = optimizer.shard_gradients(F, grads)
        np.testing.assert_allclose(float(F.to_numpy(optimizer.global_norm(F, shards))),
                                   float(F.to_numpy(norm)), rtol=1e-5)
        hooks.assign(optimizer.update(F, shards, hooks.parameters(), lr, COEF))
    expected, got = weights(plain), weights(sharded)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-7, err_msg=name)
    state, reference = optimizer.state(F), plain.optimizer_state()
    assert sorted(state) == sorted(reference) and int(state["step"]) == 3
    for name in reference:
        np.testing.assert_allclose(state[name], reference[name], rtol=1e-5, atol=1e-9, err_msg=name)
