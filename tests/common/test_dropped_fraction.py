"""A multi-process run's ``dropped_fraction`` is the global ratio, all ranks' dropped
assignments over all their requested ones (models.metrics.pooled_dropped_fraction, applied
by the trainer after the ranks' metrics are averaged), not the mean of the ranks' ratios."""
import numpy as np

from models.metrics import pooled_dropped_fraction


def test_pooled_fraction_is_the_global_ratio():
    # two ranks of 10 tokens, two MoE layers; rank 0 asks for 20 assignments and drops 10,
    # rank 1 asks for 5 and drops none (layer 0); layer 1 drops nothing anywhere
    requested = np.array([[20.0, 10.0], [5.0, 10.0]])
    dropped = np.array([[10.0, 0.0], [0.0, 0.0]])
    tokens = 10.0
    ranks = [{"layers.dropped_per_token": dropped[r] / tokens,
              "layers.mean_true_experts_per_token": requested[r] / tokens,
              "layers.dropped_fraction": dropped[r] / requested[r]} for r in range(2)]
    averaged = {key: np.mean([rank[key] for rank in ranks], 0) for key in ranks[0]}
    pooled = pooled_dropped_fraction(averaged)
    np.testing.assert_allclose(pooled["layers.dropped_fraction"], [10 / 25, 0.0])
    np.testing.assert_allclose(pooled["dropped_fraction"], (10 / 25 + 0.0) / 2)
    assert averaged["layers.dropped_fraction"][0] == 0.25  # the mean of the ratios, as logged before


def test_nothing_requested_is_nothing_dropped_and_other_metrics_pass():
    assert pooled_dropped_fraction({"loss": 1.0}) == {}
    pooled = pooled_dropped_fraction({"layers.dropped_per_token": np.zeros(2),
                                      "layers.mean_true_experts_per_token": np.zeros(2)})
    assert float(pooled["dropped_fraction"]) == 0.0
