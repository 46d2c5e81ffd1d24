"""One SIGKILL of scripts/train.py in the middle of a checkpoint write (the full campaign,
random moments included, is ``scripts/kill_campaign.py``): the run resumes from its newest
complete checkpoint and ends on the uninterrupted run's weights, bitwise.

Runs on torch only: what a kill can break is framework-free (training/checkpoint.py writes
NumPy arrays through a temporary file and a rename, with a CRC, and picks the newest whole
checkpoint), and MindSpore's own restore of a checkpoint is checked by
test_trainer.py::test_resumed_run_repeats_the_uninterrupted_one. Three MindSpore process
starts made this test a minute of CI; ``scripts/kill_campaign.py --backend mindspore``
runs the campaign there (docs/guide/getting-started.md, "Training a language model")."""
import random

import pytest

from scripts.kill_campaign import DEFAULT_RTOL, Campaign


def test_killed_runs_resume_to_the_same_weights(runner, tmp_path):
    if runner.name != "torch":
        pytest.skip("framework-free checkpoint writing: checked on torch (see the module docstring)")
    campaign = Campaign(runner.name, steps=8, workdir=tmp_path, rtol=DEFAULT_RTOL[runner.name])
    campaign.run_reference()
    trial = campaign.trial(0, "checkpoint_write", random.Random(0))
    assert trial["killed"] and trial["mid_write"] and trial["survived"], trial
