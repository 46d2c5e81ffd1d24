"""A checkpoint written by one backend continues on the other: torch trains 2 steps,
convert_run moves the run to MindSpore, which gives the same validation loss and then the
same training losses as torch's own continuation; the MindSpore checkpoint converted back
gives torch the same validation loss again.

Tolerance: rtol 1e-4 on losses (float32, different kernels, two AdamW steps apart)."""
import os

import numpy as np

from training.config import config_from_dict
from training.convert import convert_run, run_config
from training.metrics_log import read_records
from training.tiny_run import tiny_run_config, write_corpus
from training.trainer import Trainer

RTOL = 1e-4
QUIET = dict(log=lambda line: None, progress=False, tensorboard=False)


def train_losses(run_dir):
    return {r["step"]: r["lm_loss"] for r in read_records(run_dir / "metrics.jsonl") if r["kind"] == "train"}


def test_checkpoint_moves_between_backends(ms_runner, tmp_path):
    graph = os.environ.get("MOE_MS_MODE", "pynative") == "graph"
    corpus = write_corpus(tmp_path / "corpus.txt")
    raw = tiny_run_config(tmp_path / "torch", corpus, "torch", graph, train={"steps": 4, "checkpoint_every": 2})
    torch_run = Trainer(config_from_dict(raw), **QUIET)
    torch_run.run(until=2)
    convert_run(tmp_path / "torch", tmp_path / "ms", "mindspore")
    ms_run = Trainer(run_config(tmp_path / "ms"), resume=True, **QUIET)
    assert ms_run.config.backend == "mindspore" and ms_run.step == 2
    np.testing.assert_allclose(ms_run.validate()["val_loss"], torch_run.validate()["val_loss"], rtol=RTOL)

    torch_run.run()
    ms_run.run()
    a, b = train_losses(tmp_path / "torch"), train_losses(tmp_path / "ms")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    np.testing.assert_allclose([b[3], b[4]], [a[3], a[4]], rtol=RTOL)  # steps 1-2 came with the conversion

    convert_run(tmp_path / "ms", tmp_path / "back", "torch")
    back = Trainer(run_config(tmp_path / "back"), resume=True, **QUIET)
    np.testing.assert_allclose(back.validate()["val_loss"], ms_run.validate()["val_loss"], rtol=RTOL)
    np.testing.assert_allclose(back.validate()["val_loss"], torch_run.validate()["val_loss"], rtol=RTOL)
