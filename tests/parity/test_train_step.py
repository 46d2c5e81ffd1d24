"""Three AdamW steps (clipping active, weight decay on) from the same weights on the same
batches give the same losses, weights and optimizer state on torch and MindSpore, and the
optimizer state of one framework continues training in the other.

Tolerance: float32 with different kernels; Adam divides by sqrt(v), which magnifies tiny
gradient differences on near-zero gradients, so weights are compared with atol 2e-5
(the learning rate is 1e-2: one step moves a weight by up to ~1e-2) and losses with
rtol 1e-5."""
import numpy as np

from backends.train_step import make_train_step
from tests.support.harness import numpy_weights
from tests.support.train_fixtures import fixed_batch, regression_objective, tiny_layer

W_ATOL, LOSS_RTOL = 2e-5, 1e-5
SETTINGS = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, grad_clip=0.05)


def run(runner, values, batches, state=None):
    layer = tiny_layer()
    step = make_train_step(runner.name, runner.module(layer, values), regression_objective, **SETTINGS)
    if state is not None:
        step.load_optimizer_state(state)
    losses, norms = [], []
    for x, target in batches:
        loss, _, norm = step.step((x,), (target,), lr=SETTINGS["lr"])
        losses.append(loss)
        norms.append(norm)
    params = {k: v.copy() for k, v in step.module.numpy_params().items()}
    return losses, norms, params, step.optimizer_state()


def test_three_adamw_steps_agree(torch_runner, ms_runner):
    values = numpy_weights(tiny_layer(), seed=7)
    batches = [fixed_batch(seed=s) for s in (10, 11, 12)]
    t_loss, t_norm, t_params, t_state = run(torch_runner, values, batches)
    m_loss, m_norm, m_params, m_state = run(ms_runner, values, batches)
    np.testing.assert_allclose(m_loss, t_loss, rtol=LOSS_RTOL)
    np.testing.assert_allclose(m_norm, t_norm, rtol=LOSS_RTOL)
    assert max(t_norm) > SETTINGS["grad_clip"]  # clipping was active
    for name in t_params:
        assert np.abs(t_params[name] - values[name]).max() > 1e-3, name  # the weights moved
        np.testing.assert_allclose(m_params[name], t_params[name], atol=W_ATOL, err_msg=name)
    assert t_state.keys() == m_state.keys()
    assert int(t_state["step"]) == int(m_state["step"]) == 3
    for name in t_state:
        scale = float(np.abs(t_state[name]).max()) or 1.0
        np.testing.assert_allclose(m_state[name], t_state[name], atol=1e-4 * scale, err_msg=name)


def test_optimizer_state_crosses_frameworks(torch_runner, ms_runner):
    """torch trains two steps; MindSpore continues from torch's weights and AdamW state and
    matches torch's own third step."""
    values = numpy_weights(tiny_layer(), seed=8)
    batches = [fixed_batch(seed=s) for s in (20, 21, 22)]
    _, _, t_params2, t_state2 = run(torch_runner, values, batches[:2])
    t_loss3, _, t_params3, _ = run(torch_runner, t_params2, batches[2:], state=t_state2)
    m_loss3, _, m_params3, m_state3 = run(ms_runner, t_params2, batches[2:], state=t_state2)
    np.testing.assert_allclose(m_loss3, t_loss3, rtol=LOSS_RTOL)
    assert int(m_state3["step"]) == 3
    for name in t_params3:
        np.testing.assert_allclose(m_params3[name], t_params3[name], atol=W_ATOL, err_msg=name)
