"""Host-side sampling filters: temperature 0 is the argmax, top-k keeps k tokens, top-p keeps
the smallest most-likely set whose probability reaches p."""
import numpy as np
import pytest

from core.errors import ConfigError
from training.sampling import candidates, sample_tokens

LOGITS = np.log(np.array([0.5, 0.3, 0.15, 0.05]))


def dense(logits, temperature, top_k=0, top_p=1.0):
    ids, probs = candidates(logits, temperature, top_k, top_p)
    out = np.zeros(logits.shape[-1])
    out[ids] = probs
    return out


def test_filters():
    np.testing.assert_allclose(dense(LOGITS, 1.0), np.exp(LOGITS))
    np.testing.assert_allclose(dense(LOGITS, 1.0, top_k=2), [0.625, 0.375, 0, 0])
    # 0.79, not 0.8: the two likeliest hold 0.8 only up to rounding (numpy 2 gives 0.8 - 1 ulp)
    np.testing.assert_allclose(dense(LOGITS, 1.0, top_p=0.79), [0.625, 0.375, 0, 0])
    np.testing.assert_allclose(dense(LOGITS, 1.0, top_p=0.81), [0.5, 0.3, 0.15, 0] / np.float64(0.95))
    np.testing.assert_allclose(dense(LOGITS[::-1], 1.0, top_k=3, top_p=0.6), [0, 0, 0.3 / 0.8, 0.5 / 0.8])
    hot = dense(LOGITS, 0.5)
    assert hot[0] > 0.5 and np.isclose(hot.sum(), 1)


def test_greedy_is_the_argmax_and_draws_follow_the_probabilities():
    logits = np.random.default_rng(0).normal(size=(3, 1000)).astype(np.float32)
    np.testing.assert_array_equal(sample_tokens(logits, 0.0, 5, 0.5, None), logits.argmax(-1))
    rng = np.random.default_rng(1)
    draws = np.array([sample_tokens(np.tile(LOGITS, (2, 1)), 1.0, 3, 1.0, rng) for _ in range(4000)])
    np.testing.assert_allclose(np.bincount(draws.ravel(), minlength=4) / draws.size, [0.5 / 0.95, 0.3 / 0.95,
                               0.15 / 0.95, 0], atol=0.02)


def test_bad_settings_are_one_line():
    with pytest.raises(ConfigError, match="top_p=0"):
        sample_tokens(LOGITS[None], 1.0, 0, 0, np.random.default_rng(0))


def test_top_p_keeps_what_a_full_sort_keeps():
    rng = np.random.default_rng(2)
    cases = [(np.concatenate([rng.normal(size=vocab - 100) * 4, np.full(100, 1.0)]), top_p)  # a block of ties
             for vocab, top_p in ((5000, 0.9), (5000, 0.999), (300, 0.5), (1000, 1e-6))]
    for logits, top_p in cases + [(np.zeros(1000), 0.5)]:  # all tied: the lower ids first
        ids, probs = candidates(logits, 1.0, 0, top_p)
        full = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        order = np.argsort(-full, kind="stable")
        kept = np.sort(order[np.cumsum(full[order]) - full[order] < top_p])
        np.testing.assert_array_equal(ids, kept)
        np.testing.assert_allclose(probs, full[kept] / full[kept].sum(), rtol=1e-12)
