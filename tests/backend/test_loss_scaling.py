"""float16 loss scaling on the backend under test (backends.loss_scale): a loss small
enough that its gradients underflow float16 trains under the scale (the gradient matches
float32's) and does not without it; an overflowing scale skips the step with weights and
optimizer state untouched, halves, and training resumes once the gradients fit; the
trainer does not count overflows as bad steps and checkpoints the scale."""
import numpy as np
import pytest

from backends.loss_scale import LossScale
from backends.train_step import make_train_step
from tests.support.harness import numpy_weights
from tests.support.train_fixtures import fixed_batch, regression_objective, tiny_layer
from training.checkpoint import checkpoint_dir, latest_checkpoint, load_checkpoint
from training.config import config_from_dict
from training.metrics_log import read_records
from training.tiny_run import tiny_run_config, write_corpus
from training.trainer import Trainer

TINY = 2.0 ** -20  # dL/dy ~ 1e-8 after this factor: below float16's smallest subnormal (6e-8)


def tiny_objective(F, outputs, target):
    loss, metrics = regression_objective(F, outputs, target)
    return loss * TINY, metrics


def first_step(runner, dtype: str, loss_scale, objective=tiny_objective):
    """(grad norm reported by one step, the step) for the tiny layer in ``dtype``."""
    layer = tiny_layer(router="topk")
    module = runner.module(layer, numpy_weights(layer, seed=4), dtype)
    step = make_train_step(runner.name, module, objective, lr=1e-3, loss_scale=loss_scale)
    x, target = fixed_batch(seed=5)
    _, _, norm = step.step((x.astype(dtype),), (target.astype(dtype),), lr=1e-3)
    return norm, step


def test_scaling_recovers_gradients_that_underflow_float16(runner):
    reference, _ = first_step(runner, "float32", None)
    scaled, step = first_step(runner, "float16", LossScale())
    assert 1e-9 < reference < 1e-4, reference  # the regime where float16 underflows
    if runner.name == "torch":  # float16's range, not the backend's: checked once
        unscaled, _ = first_step(runner, "float16", None)
        assert unscaled < 0.1 * reference, (unscaled, reference)  # lost without scaling
    np.testing.assert_allclose(scaled, reference, rtol=0.01)
    assert step.skipped == 0 and step.overflows == 0 and int(step.optimizer_state()["step"]) == 1


def test_overflow_skips_halves_and_recovers(runner):
    x, target = fixed_batch(seed=6)
    layer = tiny_layer(router="topk")
    module = runner.module(layer, numpy_weights(layer, seed=7), "float16")
    scale = LossScale(value=2.0 ** 40)  # the scaled gradients exceed float16's 65504
    step = make_train_step(runner.name, module, regression_objective, lr=1e-3, loss_scale=scale)
    before = {k: v.copy() for k, v in module.numpy_params().items()}
    loss, _, norm = step.step((x.astype("float16"),), (target.astype("float16"),), lr=1e-3)
    assert np.isfinite(loss) and not np.isfinite(norm)
    assert step.overflowed and (step.overflows, step.skipped, scale.value) == (1, 0, 2.0 ** 39)
    assert int(step.optimizer_state()["step"]) == 0
    for name, value in module.numpy_params().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    for _ in range(40):
        if np.isfinite(step.step((x.astype("float16"),), (target.astype("float16"),), lr=1e-3)[2]):
            break
    assert not step.overflowed and step.skipped == 0 and 2.0 ** 10 < scale.value < 2.0 ** 39
    assert int(step.optimizer_state()["step"]) == 1 and step.overflows == 40 - np.log2(scale.value)
    assert any(not np.array_equal(value, before[name]) for name, value in module.numpy_params().items())


def test_trainer_absorbs_overflows_and_checkpoints_the_scale(runner, tmp_path):
    """A float16 run whose initial scale overflows: more overflow steps than
    ``max_bad_steps`` do not stop it, none is counted as skipped, the other steps update, and the scale
    (state and value) is in the checkpoint and comes back on resume. The trainer's part is
    framework-free; MindSpore's scaled step is tested above."""
    if runner.name != "torch":
        pytest.skip("framework-free trainer plumbing: run once, on torch")
    corpus = write_corpus(tmp_path / "corpus.txt", sentences=300)
    raw = tiny_run_config(tmp_path / "run", corpus, runner.name, dtype="float16",
                          train={"steps": 10, "max_bad_steps": 2, "loss_scale_init": 2.0 ** 24,
                                 "checkpoint_every": 10})
    trainer = Trainer(config_from_dict(raw), log=lambda *_: None, progress=False)
    summary = trainer.run()
    overflows = summary["overflow_steps"]
    assert overflows > 2 and summary["skipped_steps"] == 0, summary
    assert summary["loss_scale"] == 2.0 ** (24 - overflows)
    records = [r for r in read_records(trainer.run_dir / "metrics.jsonl") if r["kind"] == "train"]
    scale = 2.0 ** 24
    for record in records:  # an overflow step logs no loss and halves the scale; a finite one keeps it
        scale = scale if "lm_loss" in record else scale / 2
        assert record["loss_scale"] == scale, (record["step"], record["loss_scale"], scale)
    losses = [r["lm_loss"] for r in records if "lm_loss" in r]
    assert len(losses) == 10 - overflows >= 3 and all(np.isfinite(losses))
    assert int(trainer.train_step.optimizer_state()["step"]) == 10 - overflows  # each finite step updated
    saved = load_checkpoint(latest_checkpoint(checkpoint_dir(trainer.run_dir)))
    since_overflow = len(records) - max(i + 1 for i, r in enumerate(records) if "lm_loss" not in r)
    assert saved.state["loss_scale"] == {"value": 2.0 ** (24 - overflows), "good_steps": since_overflow}
    raw["train"]["steps"] = 12
    resumed = Trainer(config_from_dict(raw), resume=True, log=lambda *_: None, progress=False)
    assert resumed.train_step.loss_scale.state_dict() == saved.state["loss_scale"]
