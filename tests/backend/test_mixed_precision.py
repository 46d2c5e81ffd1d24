"""Mixed precision on the backend under test (bfloat16 on torch, float16 where bfloat16 has
no CPU kernels): the model computes in low precision, AdamW updates float32 master weights
with float32 moments, and the model's weights are the masters rounded. Updates smaller than
one low-precision step accumulate in the masters (they would be lost on the weights)."""
import math

import numpy as np
import pytest

from backends.train_step import make_train_step
from core.errors import ConfigError
from models.lm_objective import lm_objective
from models.transformer import Transformer
from tests.backend.test_transformer import tiny, tokens_of
from tests.support.harness import numpy_weights


@pytest.fixture(scope="module")
def mixed_step(runner):
    """One compiled low-precision train step for the module (compiling it takes ~15 s on
    MindSpore); each test takes steps of its own and checks what they did."""
    model = Transformer(tiny())
    values = numpy_weights(model, seed=2)
    for dtype in ("bfloat16", "float16"):
        try:
            module = runner.module(model, values, dtype=dtype)
            break
        except ConfigError:
            continue
    else:
        pytest.skip("no low-precision dtype runs on this backend here")
    step = make_train_step(runner.name, module, lm_objective, lr=2e-4, betas=(0.9, 0.99), grad_clip=1.0)
    return step, values, dtype


def test_masters_are_float32_and_keep_small_updates(mixed_step):
    step, initial, dtype = mixed_step
    tokens = tokens_of((2, 9), seed=4)
    losses = [step.step((tokens[:, :-1],), (tokens[:, 1:],), lr=2e-4)[0] for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses) and step.skipped == 0
    masters = step.master_weights()
    moments = step.optimizer_state()
    model = step.module.numpy_params()
    assert masters and set(masters) == {n for n in step.order}
    changed_master = changed_model = total = 0
    for name, master in masters.items():
        assert master.dtype == np.float32 and moments[f"exp_avg.{name}"].dtype == np.float32, name
        ulp = 2.0 ** -7 if dtype == "bfloat16" else 2.0 ** -10
        np.testing.assert_allclose(model[name], master, rtol=ulp, atol=1e-7, err_msg=name)
        changed_master += int(np.sum(master != initial[name]))
        changed_model += int(np.sum(model[name] != model_rounded(initial[name], dtype)))
        total += master.size
    assert changed_master > 0.9 * total  # every weight with a gradient moved in float32
    assert changed_model < changed_master  # ... but some moves are below one low-precision step


def model_rounded(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values rounded to ``dtype`` and back (round to nearest even)."""
    if dtype == "float16":
        return values.astype(np.float16).astype(np.float32)
    bits = values.astype(np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def test_master_weights_round_trip(mixed_step):
    step, _, _ = mixed_step
    tokens = tokens_of((2, 9), seed=5)
    step.step((tokens[:, :-1],), (tokens[:, 1:],), lr=2e-4)
    saved = step.master_weights()
    shifted = {name: value + 1e-4 for name, value in saved.items()}
    step.load_master_weights(shifted)
    for name, value in step.master_weights().items():
        np.testing.assert_array_equal(value, shifted[name])


class RecordingSync:
    """Stands in for ``parallel.gradient_sync.GradientSync`` in one process: records the
    dtype of every gradient the train step hands it, reduces nothing."""

    def __init__(self, F) -> None:
        self.F, self.dtypes = F, []

    def average(self, F, grads):
        self.dtypes.extend(str(g.dtype) for g in grads)
        return list(grads)

    def global_norm(self, F, grads):
        return F.global_norm(grads)

    def batch_mean(self, F, value):
        return F.cast(value, F.float32)


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_gradients_reach_the_sync_in_float32(mixed_step, micro_batches):
    """A multi-process run sums every rank's gradients: a low-precision model's gradients
    (float16 ones still loss-scaled) must be float32 before that sum, on both frameworks."""
    step, _, _ = mixed_step
    tokens = tokens_of((2, 9), seed=6)
    sync = step.sync = RecordingSync(step.F)
    try:
        step.step((tokens[:, :-1],), (tokens[:, 1:],), lr=2e-4, micro_batches=micro_batches)
    finally:
        step.sync = None
    assert step.skipped == 0 and len(sync.dtypes) == len(step.order)
    assert sync_dtypes(sync.dtypes) == {"float32"}


def sync_dtypes(dtypes) -> set:
    return {name.lower().replace("torch.", "") for name in dtypes}
