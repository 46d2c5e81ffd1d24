"""Windows, domains, the seeded split and the resumable batch iterator."""
import json

import numpy as np
import pytest

from core.errors import ConfigError
from tests.support.small_text import CODE_RECORDS, NOTE_RECORDS, REPEAT, small_data, write_user_jsonl
from training.data.batches import gather
from training.data.pipeline import build_data, load_sources
from training.data.windows import split_windows, window_starts


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def data(cache):
    return build_data(small_data(cache), seed=0)


def rows(batch_tokens):
    return {tuple(r) for r in batch_tokens}


def test_windows_overlap_by_one_and_stay_in_bounds():
    starts = window_starts(100, 32)
    assert starts.tolist() == [0, 32, 64]  # the last window ends at token 97 <= 100
    assert window_starts(97, 32).tolist() == [0, 32, 64] and window_starts(96, 32).tolist() == [0, 32]


def test_domains_follow_the_source(data):
    assert data.domain_names == ["shakespeare", "bible"]
    n_shakespeare = data.summary["tokens"]["shakespeare"]
    assert (data.domains[:n_shakespeare] == 0).all() and (data.domains[n_shakespeare:] == 1).all()
    tokens, domains = next(data.train_batches(64))
    assert tokens.shape == (64, 33) and domains.shape == (64, 32)
    assert tokens.dtype == np.int32 and domains.dtype == np.int32
    texts = {i: "".join(d.text for d in s.documents)
             for i, s in enumerate(load_sources(["shakespeare", "bible"], [], 6000))}
    for row, dom in zip(tokens, domains):
        assert len(set(dom.tolist())) == 1  # a window never crosses sources
        assert data.tokenizer.decode(row) in texts[int(dom[0])]  # and is tagged with its own source
    assert set(np.unique(domains).tolist()) == {0, 1}


def test_jsonl_records_carry_their_own_domain(tmp_path, cache):
    path = write_user_jsonl(tmp_path)
    mixed = build_data(small_data(cache, corpora=["bible"], files=[str(path)], seq_len=16), seed=0)
    assert mixed.domain_names == ["bible", "code", "notes"]
    code = mixed.tokens[mixed.domains == mixed.domain_names.index("code")]
    notes = mixed.tokens[mixed.domains == mixed.domain_names.index("notes")]
    assert mixed.tokenizer.decode(code) == "".join(c * REPEAT for c in CODE_RECORDS)
    assert mixed.tokenizer.decode(notes) == "".join(n * REPEAT for n in NOTE_RECORDS)


def test_split_is_disjoint_complete_and_stratified(data):
    train, val = data.train_starts, data.val_starts
    assert not set(train.tolist()) & set(val.tolist())
    n_shakespeare = data.summary["tokens"]["shakespeare"]
    lengths = [n_shakespeare, len(data.tokens) - n_shakespeare]
    expected = np.concatenate([window_starts(lengths[0], 32), window_starts(lengths[1], 32) + lengths[0]])
    assert sorted(np.concatenate([train, val]).tolist()) == expected.tolist()
    for lo, hi in ((0, lengths[0]), (lengths[0], sum(lengths))):
        n_val = int(((val >= lo) & (val < hi)).sum())
        n_all = n_val + int(((train >= lo) & (train < hi)).sum())
        assert n_val == max(1, round(0.1 * n_all))


def test_split_and_order_depend_only_on_the_seed(data, cache):
    same = build_data(small_data(cache), seed=0)
    np.testing.assert_array_equal(same.train_starts, data.train_starts)
    np.testing.assert_array_equal(same.val_starts, data.val_starts)
    np.testing.assert_array_equal(next(same.train_batches(8))[0], next(data.train_batches(8))[0])
    other = build_data(small_data(cache), seed=1)
    assert set(other.val_starts.tolist()) != set(data.val_starts.tolist())
    assert not np.array_equal(next(other.train_batches(8))[0], next(data.train_batches(8))[0])


def test_adding_a_source_keeps_the_others_split():
    alone_train, alone_val = split_windows([400], ["a"], 32, 0.25, seed=5)
    both_train, both_val = split_windows([400, 300], ["a", "b"], 32, 0.25, seed=5)
    assert set(alone_val.tolist()) == set(both_val[both_val < 400].tolist())
    b_train, b_val = split_windows([300], ["b"], 32, 0.25, seed=5)
    assert set((b_val + 400).tolist()) == set(both_val[both_val >= 400].tolist())
    assert len(both_train) + len(both_val) == len(window_starts(400, 32)) + len(window_starts(300, 32))
    with pytest.raises(ConfigError, match=r"^data.seq_len=32: tiny has only 40 tokens"):
        split_windows([40], ["tiny"], 32, 0.1, seed=0)


def test_an_epoch_visits_every_training_window_once(data):
    n = len(data.train_starts)
    batches = data.train_batches(7)
    seen = np.concatenate([next(batches)[0] for _ in range(n // 7)])
    everything = gather(data.tokens, data.domains, data.train_starts, 32)[0]
    assert len(rows(everything)) == n  # windows are distinct, so rows identify them
    assert len(seen) == n - n % 7 and len(rows(seen)) == len(seen) and rows(seen) <= rows(everything)
    if n % 7:  # the rest of the epoch comes first in the next batch, then epoch 1 begins
        tail = next(batches)[0]
        assert rows(np.concatenate([seen, tail[: n % 7]])) == rows(everything)
        assert batches.state_dict()["epoch"] == 1


def test_restored_position_gives_identical_next_batches(data):
    n = len(data.train_starts)
    steps_before = n // 5 + 3  # the saved position lies in epoch 1, and the next batches cross into epoch 2
    first = data.train_batches(5)
    for _ in range(steps_before):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # plain JSON, as a checkpoint stores it
    expected = [next(first) for _ in range(n // 5 + 2)]
    resumed = data.train_batches(5)
    resumed.load_state_dict(state)
    for (t1, d1), (t2, d2) in zip(expected, [next(resumed) for _ in range(len(expected))]):
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(d1, d2)
    assert state["epoch"] == 1 and first.state_dict()["epoch"] == 2
    fresh = data.train_batches(5)
    assert not np.array_equal(next(fresh)[0], expected[0][0])


def test_position_from_other_data_is_refused(data, cache):
    other = build_data(small_data(cache), seed=1)
    with pytest.raises(ConfigError, match=r"^data position: saved for dataset"):
        other.train_batches(4).load_state_dict(data.train_batches(4).state_dict())


def test_validation_batches_are_fixed_and_cover_all_domains(data):
    first = data.val_batches(4, 3)
    again = data.val_batches(4, 3)
    assert len(first) == 3
    for (a, da), (b, db) in zip(first, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(da, db)
    everything = data.val_batches(len(data.val_starts), 1)[0]
    assert set(np.unique(everything[1]).tolist()) == {0, 1}
    many = data.val_batches(len(data.val_starts), 2)  # wraps: the second pass repeats the first
    np.testing.assert_array_equal(many[0][0], many[1][0])
