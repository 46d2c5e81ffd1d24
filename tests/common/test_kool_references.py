"""The exact references behind the skip/balanced unbiasedness tests (tests/support/kool.py)
checked on their own, framework-free: the two-expert Gumbel-Matching probabilities by
simulation with scipy's assignment solver, the skip gradient by finite differences, the
enumeration weights, and the noise that replays a chosen draw."""
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import softmax

from tests.support.kool import (balanced_two_expert_gradient, balanced_two_expert_loss, balanced_two_expert_probs,
                                skip_configurations, skip_exact_gradient, skip_noise)

LOGITS = np.array([[0.5, -0.3], [1.2, 0.2], [-0.4, 0.6], [0.1, 0.0]])
TABLE = np.array([[1.0, -0.5], [0.3, 2.0], [-1.0, 0.8], [0.5, -1.2]])


def test_two_expert_gumbel_matching_probabilities_match_simulation():
    probs = balanced_two_expert_probs(LOGITS, 2)
    assert abs(sum(probs.values()) - 1.0) < 1e-9
    rng = np.random.default_rng(0)
    draws = 20000
    log_p = LOGITS - np.log(np.exp(LOGITS).sum(-1, keepdims=True))
    counts = {chosen: 0 for chosen in probs}
    for g in -np.log(-np.log(rng.uniform(size=(draws, 4, 2)))):
        expert = linear_sum_assignment(-np.repeat(log_p + g, 2, axis=1))[1] // 2
        counts[tuple(np.nonzero(expert == 0)[0])] += 1
    for chosen, prob in probs.items():
        assert abs(counts[chosen] / draws - prob) < 4 * np.sqrt(prob * (1 - prob) / draws), chosen


def test_two_expert_gradient_is_the_derivative_of_the_loss():
    grad = balanced_two_expert_gradient(LOGITS, TABLE, 2)
    direction = np.random.default_rng(1).normal(size=LOGITS.shape)
    step = 1e-3
    change = (balanced_two_expert_loss(LOGITS + step * direction, TABLE, 2)
              - balanced_two_expert_loss(LOGITS - step * direction, TABLE, 2)) / (2 * step)
    assert abs(change - (grad * direction).sum()) < 1e-6
    np.testing.assert_allclose(grad.sum(-1), 0.0, atol=1e-8)


def test_skip_gradient_matches_finite_differences():
    logits, table = LOGITS[:3], TABLE[:3]

    def loss(z):
        return (softmax(z, -1) * table).sum()

    step = 1e-6
    numeric = np.zeros_like(logits)
    for index in np.ndindex(*logits.shape):
        shift = np.zeros_like(logits)
        shift[index] = step
        numeric[index] = (loss(logits + shift) - loss(logits - shift)) / (2 * step)
    np.testing.assert_allclose(skip_exact_gradient(logits, table), numeric, atol=1e-8)


def test_skip_enumeration_and_replay_noise():
    """Probabilities sum to 1, and the noise of each configuration replays it under the
    documented rule (inverse CDF of column 0, arrival order by column 1)."""
    probs = softmax(LOGITS[:3], -1)
    configurations = skip_configurations(probs)
    assert len(configurations) == 8 * 6
    assert abs(sum(p for p, _, _ in configurations) - 1.0) < 1e-12
    for _, z, order in configurations:
        noise = skip_noise(probs, z, order)
        drawn = np.minimum((np.cumsum(probs, -1) <= noise[:, :1]).sum(-1), 1)
        np.testing.assert_array_equal(drawn, z)
        assert tuple(np.argsort(noise[:, 1])) == order
