"""Skip router (models/routers/skip.py) on the backend under test: the sampling rule and
capacity, and unbiasedness of its gradient estimator for the untruncated expected loss,
(1) Monte Carlo over many replicas of a loss-table problem (mean within 3 standard errors
of the exact gradient; the naive estimator without 1/pi weights is far outside), and (2)
the exact expectation of the whole layer's estimator over every (experts, arrival order)
of a 3-token problem against the exact gradient of the dense expectation, also with the
leave-one-out baseline (exact when no token can be skipped, biased when tokens compete)."""
import numpy as np
import pytest
from scipy.special import softmax

from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from models.routers.skip import skip_log_prob, skip_sample
from tests.support.harness import numpy_weights, random_inputs
from tests.support.kool import (BatchedEstimator, DenseSkipObjective, ScoredLayer, mean_and_standard_error,
                                skip_configurations, skip_exact_gradient, skip_noise)
from tests.support.probes import RouterProbe

LOGITS = np.array([[0.4, -0.2], [1.0, 0.1], [-0.3, 0.5]])
TABLE = np.array([[1.0, -0.5], [0.3, 2.0], [-1.0, 0.8]])
REPLICAS = 20000


def table_estimates(runner, correction: bool) -> np.ndarray:
    """Per-replica gradient estimates [R, T, E] for J = E_z[sum_t TABLE[t, z_t]], C = 1."""
    def surrogate(F, log_probs, noise, params):
        sample = skip_sample(F, F.exp(log_probs), noise, 1)
        losses = F.sum(sample["one_hot"] * params["table"], -1)
        return F.sum(F.stop_gradient(losses) * skip_log_prob(F, log_probs, sample, correction), -1)

    component = BatchedEstimator((REPLICAS,) + LOGITS.shape, surrogate, {"table": TABLE})
    values = {"logits": np.tile(LOGITS.astype(np.float32), (REPLICAS, 1, 1)), "table": TABLE.astype(np.float32)}
    noise = np.random.default_rng(7).uniform(size=(REPLICAS, 3, 2)).astype(np.float32)
    out = runner.forward_backward(component, values, noise, np.ones((REPLICAS, 1), np.float32))
    return out["grads"]["logits"].astype(np.float64)


def test_monte_carlo_mean_matches_exact_gradient(runner):
    mean, error = mean_and_standard_error(table_estimates(runner, correction=True))
    z = (mean - skip_exact_gradient(LOGITS, TABLE)) / error
    assert np.abs(z).max() < 3.0, z


def test_naive_estimator_is_biased(runner):
    mean, error = mean_and_standard_error(table_estimates(runner, correction=False))
    z = (mean - skip_exact_gradient(LOGITS, TABLE)) / error
    assert np.abs(z).max() > 10.0, z


def tiny_layer(correction: bool, baseline: str = "none", capacity_factor: float = 0.5) -> MoELayer:
    """T = 3 tokens, E = 2, C = ceil(capacity_factor * 3 / 2) (1 by default); router losses off."""
    return MoELayer(MoEConfig(d_model=4, ffn_hidden=6, num_experts=2, top_k=1, router="skip",
                              capacity_factor=capacity_factor, balance_loss_coef=0.0, z_loss_coef=0.0,
                              expert_init_std=0.5, router_init_std=0.8,
                              router_options={"correction": correction, "baseline": baseline}))


@pytest.mark.parametrize("correction,baseline,capacity_factor,unbiased", [
    (True, "none", 0.5, True), (False, "none", 0.5, False),
    (True, "leave_one_out", 0.5, False), (True, "leave_one_out", 2.0, True)])
def test_layer_expectation_over_every_draw(runner, correction, baseline, capacity_factor, unbiased):
    """sum over all 8 expert draws x 6 arrival orders of P * (layer gradient estimate), for
    linear token losses <c_t, y_t> with the score term added, vs the gradient of
    J = sum_t sum_e p_te <c_t, p_te h_e(x_t)>: equal with the correction; not without it;
    with the leave-one-out baseline equal when no token can be skipped (C = 3 = T) and not
    when tokens compete for C = 1 (the other tokens' losses then depend on z_t)."""
    layer = tiny_layer(correction, baseline, capacity_factor)
    x, cot = random_inputs((3, 4), seed=1), random_inputs((3, 4), seed=2)
    scored = ScoredLayer(layer, cot)
    values = numpy_weights(scored, seed=3)
    probs = softmax(x.astype(np.float64) @ values["router.weight"], -1)
    expected = {}
    for prob, z, order in skip_configurations(probs):
        out = runner.forward_backward(scored, values, np.concatenate([x, skip_noise(probs, z, order)], -1), cot)
        grads = dict(out["grads"], x=out["grad_x"][:, :4])
        for name, grad in grads.items():
            expected[name] = expected.get(name, 0.0) + prob * grad.astype(np.float64)
    exact = runner.forward_backward(DenseSkipObjective(layer, cot), values, x, np.zeros_like(x))
    exact_grads = dict(exact["grads"], x=exact["grad_x"])
    for name, grad in exact_grads.items():
        close = np.allclose(expected[name], grad, rtol=1e-4, atol=1e-5)
        if unbiased:
            np.testing.assert_allclose(expected[name], grad, rtol=1e-4, atol=1e-5, err_msg=name)
        elif name == "router.weight":
            assert not close, "this router gradient must be biased"


def test_sampling_rule_and_capacity(runner):
    """Experts by inverse CDF of noise[:, 0], arrivals in ascending noise[:, 1], each
    expert keeps its first C = 4 arrivals in that order, in slot order."""
    layer = MoELayer(MoEConfig(d_model=8, ffn_hidden=8, num_experts=4, top_k=1, router="skip",
                               capacity_factor=1.0, router_init_std=0.7))
    probe = RouterProbe(layer, "probs", ("slot_token", "slot_weight", "slot_grad_scale"))
    values = numpy_weights(probe, seed=4)
    x = random_inputs((16, 8), seed=5)
    noise = np.random.default_rng(6).uniform(size=(16, 2)).astype(np.float32)
    probs, aux = runner.forward(probe, values, x, {"routing_noise": noise})
    reference = softmax(x.astype(np.float64) @ values["router.weight"], -1)
    z = np.minimum((np.cumsum(reference, -1) <= noise[:, :1]).sum(-1), 3)
    expected = np.full((4, 4), 16)
    arrivals = np.zeros(4, int)
    for t in np.argsort(noise[:, 1]):
        if arrivals[z[t]] < 4:
            expected[z[t], arrivals[z[t]]] = t
        arrivals[z[t]] += 1
    assert arrivals.max() > 4, "the draw must overflow an expert"
    np.testing.assert_array_equal(aux["slot_token"], expected)
    filled = expected < 16
    np.testing.assert_allclose(aux["slot_weight"][filled], reference[expected[filled], np.nonzero(filled)[0]],
                               rtol=1e-5)
    np.testing.assert_allclose(aux["slot_grad_scale"][:, 0], np.maximum(arrivals / 4, 1.0), rtol=1e-6)


def test_default_noise_samples_router_distribution(runner):
    """Without routing_noise (F.uniform): per-expert counts match sum_t p_te within 4 sd."""
    layer = MoELayer(MoEConfig(d_model=8, ffn_hidden=8, num_experts=4, top_k=1, router="skip",
                               capacity_factor=4.0, router_init_std=0.7))
    values = numpy_weights(layer, seed=8)
    x = random_inputs((512, 8), seed=9)
    _, aux = runner.forward(layer, values, x)
    probs = softmax(x.astype(np.float64) @ values["router.weight"], -1)
    sd = np.sqrt((probs * (1 - probs)).sum(0))
    assert np.abs(aux["tokens_per_expert"] - probs.sum(0)).max() < 4 * sd.max()
    assert aux["dropped_fraction"] == 0.0
    assert aux["routing_log_prob"].shape == (512,)
