"""The NumPy reference (tests/support/reference.py) against properties that follow from
the papers' definitions, so that backend tests compare with something trustworthy."""
import numpy as np
import pytest

from tests.support import reference as ref


def random_logits(shape, seed, scale=2.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


@pytest.mark.parametrize("renormalize", [True, False])
def test_topk_routing_picks_the_largest_probabilities(renormalize):
    logits = random_logits((20, 6), seed=0)
    probs, index, weight = ref.topk_routing(logits, 3, renormalize)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-12)
    for t in range(20):
        assert len(set(index[t])) == 3
        chosen = probs[t, index[t]]
        assert chosen.min() >= np.delete(probs[t], index[t]).max()
        assert np.all(np.diff(chosen) <= 0)
        expected = chosen / chosen.sum() if renormalize else chosen
        np.testing.assert_allclose(weight[t], expected, rtol=1e-12)


def test_top_k_ties_go_to_the_lower_index():
    index, _ = ref.top_k(np.array([[0.2, 0.4, 0.4, 0.0]]), 2)
    assert index.tolist() == [[1, 2]]


def test_adamoe_weights_renormalise_over_true_experts_only():
    n, m, k = 3, 5, 3
    logits = random_logits((40, n + m), seed=1, scale=3.0)
    probs, index, weight = ref.adamoe_routing(logits, n, k)
    some_true = some_null_only = 0
    for t in range(40):
        true = index[t] < n
        assert np.all(weight[t][~true] == 0)
        if true.any():
            some_true += 1
            np.testing.assert_allclose(weight[t][true].sum(), 1.0, rtol=1e-12)
            np.testing.assert_allclose(weight[t][true] / probs[t, index[t][true]],
                                       1.0 / probs[t, index[t][true]].sum(), rtol=1e-12)
        else:
            some_null_only += 1
            assert np.all(weight[t] == 0)
    assert some_true and some_null_only, "the draw must cover both kinds of token"


def test_switch_balance_loss_is_one_when_balanced_and_n_when_collapsed():
    n, t = 4, 8
    uniform = np.full((t, n), 1.0 / n)
    balanced = (np.arange(t) % n)[:, None]
    assert ref.switch_balance_loss(uniform, balanced, n) == pytest.approx(1.0)
    collapsed = np.zeros((t, n))
    collapsed[:, 0] = 1.0
    assert ref.switch_balance_loss(collapsed, np.zeros((t, 1), int), n) == pytest.approx(n)


def test_null_bucket_loss_ignores_how_load_spreads_over_nulls():
    n, m = 2, 3
    probs = ref.softmax(random_logits((6, n + m), seed=2))
    spread = np.array([[0, 2], [1, 3], [0, 4], [1, 2], [0, 3], [1, 4]])
    piled = np.array([[0, 2], [1, 2], [0, 2], [1, 2], [0, 2], [1, 2]])
    bucket = ref.null_bucket_balance_loss(probs, spread, n, m)
    assert ref.null_bucket_balance_loss(probs, piled, n, m) == pytest.approx(bucket, rel=1e-12)
    counts = np.array([3, 3, 2, 2, 2]) / 12  # the bucket's f for both routings
    assert bucket == pytest.approx((n + m) * np.dot(counts, probs.mean(0)), rel=1e-12)
    assert ref.switch_balance_loss(probs, spread, n + m) != pytest.approx(
        ref.switch_balance_loss(probs, piled, n + m), rel=1e-6)


def test_z_loss_is_mean_squared_logsumexp():
    logits = random_logits((5, 4), seed=3)
    expected = np.mean([np.log(np.exp(row).sum()) ** 2 for row in logits])
    assert ref.z_loss(logits) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("policy", ["position", "probability"])
def test_keep_mask_fills_each_expert_to_capacity(policy):
    rng = np.random.default_rng(4)
    n, m, k, t, capacity = 4, 2, 2, 30, 5
    index = np.stack([rng.choice(n + m, k, replace=False, p=[0.5, 0.2, 0.1, 0.05, 0.1, 0.05]) for _ in range(t)])
    weight = rng.random((t, k))
    kept = ref.keep_mask(index, weight, n, capacity, policy)
    assert not kept[index >= n].any()
    for e in range(n):
        requested = index == e
        assert kept[requested].sum() == min(requested.sum(), capacity)
        if policy == "probability" and requested.sum() > capacity:
            assert weight[requested & kept].min() >= weight[requested & ~kept].max()
        if policy == "position" and requested.sum() > capacity:
            rank = np.arange(k)[None, :] * t + np.arange(t)[:, None]
            assert rank[requested & kept].max() < rank[requested & ~kept].min()


@pytest.mark.parametrize("factor", [0.01, 0.5, 1.0, 1.25, 2.0])
def test_capacity_is_the_smallest_integer_share(factor):
    for tokens, k, slots in [(10, 2, 4), (7, 1, 3), (64, 4, 24)]:
        capacity = ref.capacity_slots(factor, tokens, k, slots)
        assert capacity >= 1 and capacity * slots >= factor * tokens * k
        assert capacity == 1 or (capacity - 1) * slots < factor * tokens * k
