"""Host-side sampling filters: temperature 0 is the argmax, top-k keeps k tokens, top-p keeps
the smallest most-likely set whose probability reaches p."""
import numpy as np
import pytest

from core.errors import ConfigError
from training.generation import next_token_probs

LOGITS = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))


def test_filters():
    np.testing.assert_array_equal(next_token_probs(LOGITS, 0.0), [[1, 0, 0, 0]])
    np.testing.assert_allclose(next_token_probs(LOGITS, 1.0), np.exp(LOGITS))
    np.testing.assert_allclose(next_token_probs(LOGITS, 1.0, top_k=2), [[0.625, 0.375, 0, 0]])
    # 0.79, not 0.8: the two likeliest hold 0.8 only up to rounding (numpy 2 gives 0.8 - 1 ulp)
    np.testing.assert_allclose(next_token_probs(LOGITS, 1.0, top_p=0.79), [[0.625, 0.375, 0, 0]])
    np.testing.assert_allclose(next_token_probs(LOGITS, 1.0, top_p=0.81), [[0.5, 0.3, 0.15, 0]] / np.float64(0.95))
    hot = next_token_probs(LOGITS, 0.5)
    assert hot[0, 0] > 0.5 and np.isclose(hot.sum(), 1)


def test_bad_settings_are_one_line():
    with pytest.raises(ConfigError, match="top_p=0"):
        next_token_probs(LOGITS, 1.0, top_p=0)
