"""One SIGKILL of scripts/train.py on the backend under test, in the middle of a checkpoint
write (the full campaign, random moments included, is ``scripts/kill_campaign.py``): the
run resumes from its newest complete checkpoint and ends on the uninterrupted run's
weights (bitwise on torch, within 1e-5 on MindSpore)."""
import random

from scripts.kill_campaign import DEFAULT_RTOL, Campaign


def test_killed_runs_resume_to_the_same_weights(runner, tmp_path):
    campaign = Campaign(runner.name, steps=8, workdir=tmp_path, rtol=DEFAULT_RTOL[runner.name])
    campaign.run_reference()
    trial = campaign.trial(0, "checkpoint_write", random.Random(0))
    assert trial["killed"] and trial["mid_write"] and trial["survived"], trial
