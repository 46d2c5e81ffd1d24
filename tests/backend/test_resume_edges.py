"""Every edge of resume on the backend under test gets a clear answer: a finished run
resumes to nothing (no TypeError from the summary), a checkpoint past ``train.steps``, of
another model or of other data is one ConfigError naming the file, a damaged newest
checkpoint is skipped by name for the previous one, and a checkpoint written by the other
framework carries over with a log line. A disk that fills up during a checkpoint write
stops the run in one line with the previous checkpoint intact."""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError
from scripts.train import done_line
from training.checkpoint import checkpoint_dir, list_checkpoints, load_checkpoint, save_checkpoint
from training.config import config_from_dict
from training.tiny_run import tiny_run_config, write_corpus
from training.trainer import Trainer, TrainingStopped


class Runs:
    """A finished 4-step run (checkpoints at steps 2 and 4) and trainers over copies of it."""

    def __init__(self, backend: str, root: Path) -> None:
        self.backend, self.root = backend, root
        self.corpus = write_corpus(root / "corpus.txt", sentences=600)
        self.graph = os.environ.get("MOE_MS_MODE", "pynative") == "graph"
        self.finished = self.trainer("finished")
        self.summary = self.finished.run()

    def raw(self, name: str, **sections) -> dict:
        sections = {"train": {"steps": 4, "warmup_steps": 1}, **sections}
        return tiny_run_config(self.root / name, self.corpus, self.backend, self.graph, **sections)

    def trainer(self, name: str, resume: bool = False, log=None, **sections) -> Trainer:
        return Trainer(config_from_dict(self.raw(name, **sections)), resume=resume, log=log or (lambda line: None),
                       progress=False, tensorboard=False)

    def copy(self, name: str) -> Path:
        shutil.copytree(self.root / "finished", self.root / name)
        return checkpoint_dir(self.root / name)


@pytest.fixture(scope="module")
def runs(runner, tmp_path_factory):
    return Runs(runner.name, tmp_path_factory.mktemp("resume"))


def test_finished_run_resumes_to_nothing(runs):
    lines = []
    summary = runs.trainer("finished", resume=True, log=lines.append).run()
    assert any("already reached train.steps=4" in line for line in lines), lines
    assert (summary["steps"], summary["trained_steps"], summary["tokens_per_s"]) == (4, 0, None)
    assert summary["val_loss"] == runs.summary["val_loss"]  # the whole run's validations, not this call's
    line = done_line(summary, "runs/x")
    assert line.startswith("done: 4 steps in ") and "tokens/s" not in line


def test_checkpoint_past_train_steps_is_named(runs):
    with pytest.raises(ConfigError, match=r"^train\.steps=3 is below the step of .*step_00000004"):
        runs.trainer("finished", resume=True, train={"steps": 3, "warmup_steps": 1})


def test_checkpoint_of_another_model_is_named(runs):
    model = {**runs.raw("finished")["model"], "d_model": 32}
    with pytest.raises(ConfigError, match=r"step_00000004\.safetensors: written by another model \(model\."):
        runs.trainer("finished", resume=True, model=model)


def test_checkpoint_of_other_data_is_named(runs):
    data = {**runs.raw("finished")["data"], "val_fraction": 0.2}
    with pytest.raises(ConfigError, match=r"step_00000004\.safetensors: data position: saved for dataset"):
        runs.trainer("finished", resume=True, data=data)


def test_damaged_newest_checkpoint_is_skipped_by_name(runs):
    directory = runs.copy("damaged")
    newest = list_checkpoints(directory)[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the tensors
    newest.write_bytes(bytes(data))
    lines = []
    trainer = runs.trainer("damaged", resume=True, log=lines.append)
    assert "skipping checkpoint step_00000004.safetensors: damaged checkpoint (checksum mismatch)" in lines
    assert trainer.step == 2
    previous = load_checkpoint(list_checkpoints(directory)[-2]).model
    for name, value in trainer.module.numpy_params().items():
        np.testing.assert_array_equal(value, previous[name], err_msg=name)


def test_checkpoint_of_the_other_framework_carries_over(runs):
    directory = runs.copy("foreign")
    other = {"torch": "mindspore", "mindspore": "torch"}[runs.backend]
    newest = list_checkpoints(directory)[-1]
    checkpoint = load_checkpoint(newest)
    checkpoint.backend, checkpoint.rng["rank0/framework"] = other, np.zeros(3, np.uint8)
    save_checkpoint(directory, checkpoint, keep=3)
    lines = []
    trainer = runs.trainer("foreign", resume=True, log=lines.append)
    assert any(line.startswith(f"step_00000004.safetensors was written by {other}: weights, optimizer state")
               for line in lines), lines
    assert trainer.step == 4
    for name, value in runs.finished.module.numpy_params().items():
        np.testing.assert_array_equal(trainer.module.numpy_params()[name], value, err_msg=name)


@pytest.fixture
def small_disk(runs):
    """A tmpfs with room for about one and a half checkpoints, mounted as a run's checkpoint
    directory (needs root; skipped elsewhere)."""
    folder = checkpoint_dir(runs.root / "full_disk")
    folder.mkdir(parents=True)
    size = int(1.5 * list_checkpoints(checkpoint_dir(runs.root / "finished"))[-1].stat().st_size)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_full_disk_during_a_checkpoint_write_keeps_the_previous_one(runs, small_disk):
    trainer = runs.trainer("full_disk")
    with pytest.raises(TrainingStopped, match=r"^step 4: could not write a checkpoint in .*No space left on device.*"
                                              r"the last good checkpoint is .*step_00000002\.safetensors"):
        trainer.run()
    assert [p.name for p in small_disk.iterdir()] == ["step_00000002.safetensors"]  # no partial file
    assert load_checkpoint(small_disk / "step_00000002.safetensors").step == 2
