"""The train step on the backend under test: loss falls on a fixed batch, clipping bounds
the gradient AdamW sees, the learning rate is read every step, and a NaN batch changes
nothing."""
import math

import numpy as np
import pytest

from backends.train_step import make_train_step
from tests.support.harness import numpy_weights
from tests.support.train_fixtures import fixed_batch, regression_objective, tiny_layer

BETAS = (0.9, 0.99)


def make_step(runner, grad_clip: float, weight_decay: float = 0.0):
    layer = tiny_layer()
    module = runner.module(layer, numpy_weights(layer, seed=1))
    return make_train_step(runner.name, module, regression_objective, lr=1e-2, betas=BETAS,
                           weight_decay=weight_decay, grad_clip=grad_clip)


def weights(step) -> dict:
    """Copies (torch's numpy views share memory with the parameters)."""
    return {name: value.copy() for name, value in step.module.numpy_params().items()}


def global_norm(arrays) -> float:
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))


def test_loss_falls_on_a_fixed_batch(runner):
    step = make_step(runner, grad_clip=1.0, weight_decay=0.01)
    x, target = fixed_batch()
    losses = [step.step((x,), (target,), lr=1e-2)[0] for _ in range(10)]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    assert step.skipped == 0


@pytest.fixture(scope="module")
def clipped(runner):
    """A step whose clip threshold is far below the gradient norm."""
    return make_step(runner, grad_clip=1e-3)


def test_clipping_bounds_the_gradient_adamw_sees(clipped):
    x, target = fixed_batch(seed=2)
    loss, metrics, grad_norm = clipped.step((x,), (target,), lr=1e-2)
    assert grad_norm > 0.05  # the reported norm is the one before clipping
    assert set(metrics) == {"mse", "tokens_per_expert", "dropped_fraction"}
    state = clipped.optimizer_state()
    assert int(state["step"]) == 1
    # after one step exp_avg = (1 - beta1) * g_clipped, so its norm tells what AdamW saw
    seen = global_norm(v for k, v in state.items() if k.startswith("exp_avg.")) / (1 - BETAS[0])
    np.testing.assert_allclose(seen, 1e-3, rtol=1e-3)


def test_learning_rate_is_read_every_step(clipped):
    x, target = fixed_batch(seed=3)
    before = weights(clipped)
    clipped.step((x,), (target,), lr=0.0)
    after = weights(clipped)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    clipped.step((x,), (target,), lr=1e-2)
    moved = weights(clipped)
    assert max(float(np.abs(moved[n] - after[n]).max()) for n in moved) > 1e-3


def test_nan_batch_skips_the_update(clipped):
    x, target = fixed_batch(seed=4)
    x[0, 1, 2] = np.nan
    before, state, skipped = weights(clipped), clipped.optimizer_state(), clipped.skipped
    loss, _, _ = clipped.step((x,), (target,), lr=1e-2)
    assert math.isnan(loss)
    assert clipped.skipped == skipped + 1
    for name, value in weights(clipped).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    for name, value in clipped.optimizer_state().items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    x, target = fixed_batch(seed=4)
    assert math.isfinite(clipped.step((x,), (target,), lr=1e-2)[0])


def test_optimizer_state_round_trips(clipped):
    state = clipped.optimizer_state()
    doubled = {k: v * 2 for k, v in state.items()}
    clipped.load_optimizer_state(doubled)
    for name, value in clipped.optimizer_state().items():
        np.testing.assert_allclose(value, state[name] * 2, rtol=1e-6, err_msg=name)
    clipped.load_optimizer_state(state)
    x, target = fixed_batch(seed=6)
    clipped.step((x,), (target,), lr=1e-2)
    for name, value in doubled.items():  # training never writes into loaded arrays
        np.testing.assert_array_equal(value, state[name] * 2, err_msg=name)
    with pytest.raises(KeyError, match="step"):
        clipped.load_optimizer_state({k: v for k, v in state.items() if k != "step"})


def test_loaded_state_reaches_the_compiled_step(runner, clipped):
    """Weights and optimizer state loaded into an already compiled step (a resume) are the
    ones its next step uses: it then matches the step they came from (to float32 rounding:
    MindSpore's CPU kernels may differ in the last bit between two compiled graphs)."""
    source = make_step(runner, grad_clip=1e-3)
    x, target = fixed_batch(seed=5)
    for _ in range(2):
        source.step((x,), (target,), lr=1e-2)
    clipped.module.load_numpy(weights(source))
    clipped.load_optimizer_state(source.optimizer_state())
    for _ in range(2):
        np.testing.assert_allclose(clipped.step((x,), (target,), lr=1e-2)[0],
                                   source.step((x,), (target,), lr=1e-2)[0], rtol=1e-6)
    for name, value in weights(clipped).items():
        np.testing.assert_allclose(value, weights(source)[name], rtol=1e-6, atol=1e-8, err_msg=name)


def test_compiled_and_eager_steps_agree(runner):
    """The same steps with the forward and backward compiled (ms.jit / torch.compile) and
    uncompiled give the same losses, norms and weights (float32 rounding)."""
    runs = {}
    for execution in ("compiled", "eager"):
        layer = tiny_layer()
        step = make_train_step(runner.name, runner.module(layer, numpy_weights(layer, seed=1)), regression_objective,
                               lr=1e-2, betas=BETAS, grad_clip=0.5, execution=execution)
        assert step.compiled == (execution == "compiled")
        x, target = fixed_batch(seed=7)
        runs[execution] = [step.step((x,), (target,), lr=1e-2) for _ in range(2)], weights(step)
    (compiled, compiled_weights), (eager, eager_weights) = runs["compiled"], runs["eager"]
    for (loss_c, _, norm_c), (loss_e, _, norm_e) in zip(compiled, eager):
        np.testing.assert_allclose([loss_c, norm_c], [loss_e, norm_e], rtol=1e-5)
    for name, value in eager_weights.items():
        np.testing.assert_allclose(compiled_weights[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_execution_mode_is_checked(runner):
    from core.errors import ConfigError
    from models.lora_moe import LoRAMoEConfig, LoRAMoEModel
    from models.transformer_config import TransformerConfig
    layer = tiny_layer()
    module = runner.module(layer, numpy_weights(layer, seed=1))
    with pytest.raises(ConfigError, match="execution='jit': valid values are auto, compiled, eager"):
        make_train_step(runner.name, module, regression_objective, lr=1e-2, execution="jit")
    base = TransformerConfig(vocab_size=32, d_model=16, num_layers=1, num_heads=2, num_kv_heads=1, ffn_hidden=24,
                             max_seq_len=8, moe_every=0)
    lora = LoRAMoEModel(base, LoRAMoEConfig(rank=2, num_experts=2, top_k=1))
    lora_module = runner.module(lora, numpy_weights(lora, seed=1))
    with pytest.raises(ConfigError, match="execution=compiled: this step cannot compile its forward"):
        make_train_step(runner.name, lora_module, regression_objective, lr=1e-2, execution="compiled")
    assert not make_train_step(runner.name, lora_module, regression_objective, lr=1e-2).compiled
