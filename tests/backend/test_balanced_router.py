"""Balanced router (models/routers/balanced.py) on the backend under test: every expert
gets exactly C tokens; the exact solver is optimal and Sinkhorn approximates it; the
score-function estimator is unbiased for the expected loss of Gumbel-Matching (Monte Carlo
mean within 3 standard errors of an exact quadrature gradient, T = 4, E = 2, C = 2), the
naive per-token estimator is not; the whole layer's estimator (pathwise and score parts)
has the exact expectation grad J_bal (enumeration of the 6 assignments); the layer computes
what the estimator says; the exact solver runs inside the compiled train step."""
import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.special import log_softmax, softmax

from backends.train_step import make_train_step
from core.errors import ConfigError
from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from models.routers.assignment_solvers import balanced_assignment
from models.routers.balanced import balanced_log_prob, balanced_sample
from tests.support.harness import numpy_weights, random_inputs
from tests.support.kool import (
    BalancedObjective,
    BatchedEstimator,
    DenseSkipObjective,
    ScoredLayer,
    balanced_two_expert_gradient,
    balanced_two_expert_noise,
    balanced_two_expert_probs,
    balanced_two_expert_score_means,
    balanced_two_expert_token_gradients,
    mean_and_standard_error,
)
from tests.support.probes import RouterProbe

LOGITS = np.array([[0.5, -0.3], [1.2, 0.2], [-0.4, 0.6], [0.1, 0.0]])
TABLE = np.array([[1.0, -0.5], [0.3, 2.0], [-1.0, 0.8], [0.5, -1.2]])
REPLICAS = 20000


def table_estimates(runner, correction: bool) -> np.ndarray:
    """Per-replica estimates [R, T, E] of grad E_sigma[sum_t TABLE[t, sigma(t)]], exact solver."""
    def surrogate(F, log_probs, noise, params):
        _, one_hot, log_u = balanced_sample(F, log_probs, noise, 2, "exact", 0.1, 1)
        losses = F.sum(one_hot * params["table"], -1)
        return F.sum(F.stop_gradient(losses) * balanced_log_prob(F, log_probs, log_u, one_hot, correction), -1)

    component = BatchedEstimator((REPLICAS,) + LOGITS.shape, surrogate, {"table": TABLE})
    values = {"logits": np.tile(LOGITS.astype(np.float32), (REPLICAS, 1, 1)), "table": TABLE.astype(np.float32)}
    noise = np.random.default_rng(11).uniform(size=(REPLICAS, 4, 2)).astype(np.float32)
    out = runner.forward_backward(component, values, noise, np.ones((REPLICAS, 1), np.float32))
    return out["grads"]["logits"].astype(np.float64)


@pytest.fixture(scope="module")
def exact_gradient():
    return balanced_two_expert_gradient(LOGITS, TABLE, 2)


def test_monte_carlo_mean_matches_exact_gradient(runner, exact_gradient):
    mean, error = mean_and_standard_error(table_estimates(runner, correction=True))
    z = (mean - exact_gradient) / error
    assert np.abs(z).max() < 3.0, z


def test_naive_estimator_is_biased(runner, exact_gradient):
    mean, error = mean_and_standard_error(table_estimates(runner, correction=False))
    z = (mean - exact_gradient) / error
    assert np.abs(z).max() > 10.0, z


def tiny_layer(correction: bool, reward: str = "batch", baseline: str = "none") -> MoELayer:
    """T = 4 tokens, E = 2, C = 2; the z-loss off."""
    return MoELayer(MoEConfig(d_model=4, ffn_hidden=6, num_experts=2, top_k=1, router="balanced", z_loss_coef=0.0,
                              expert_init_std=0.5, router_init_std=0.8,
                              router_options={"solver": "exact", "correction": correction, "reward": reward,
                                              "baseline": baseline}))


def target_logit_grad(token_grads: np.ndarray, reward: str, baseline: str) -> np.ndarray:
    """What each estimator's score part is unbiased for, from M[u] = grad of token u's own
    expected loss (``balanced_two_expert_token_gradients``): batch, grad J_bal = sum_u M[u];
    token, the own-logit partials M[t, t]; token with leave_one_out, M[t, t] minus the mean
    over u != t of M[u, t]."""
    full = token_grads.sum(0)
    if reward == "batch":
        return full
    own = token_grads[np.arange(len(token_grads)), np.arange(len(token_grads))]
    return own if baseline == "none" else own - (full - own) / (len(own) - 1)


@pytest.mark.parametrize("correction,reward,baseline", [(True, "batch", "none"), (False, "batch", "none"),
                                                        (True, "token", "none"), (True, "token", "leave_one_out")])
def test_layer_expectation_over_every_assignment(runner, correction, reward, baseline):
    """The layer's full estimate (backprop through y plus the score term, linear token losses
    <c_t, y_t>) depends on the noise only through sigma and, linearly, through the centred
    scores s_t0 - s_t1 (E = 2), so E[estimate] = sum_S P(S) estimate(noise_S), noise_S giving
    expert 0 the set S and s_t0 - s_t1 = E[s_t0 - s_t1 | S] (quadrature). Against the exact
    gradient of J_bal = sum_te Q_te(logits) L_te (Gumbel-Matching's marginals Q) whose logit
    part is replaced by ``target_logit_grad`` (central differences of the quadrature): the
    batch reward is unbiased for grad J_bal, the token reward for the own-logit partials
    (which differ from it), and the naive estimator for neither. J_bal is the sampler's own
    expected loss, not the untruncated sum_te p_te L_te."""
    layer = tiny_layer(correction, reward, baseline)
    x, cot = random_inputs((4, 4), seed=1), random_inputs((4, 4), seed=2)
    scored = ScoredLayer(layer, cot)
    values = numpy_weights(scored, seed=3)
    logits = x.astype(np.float64) @ values["router.weight"].astype(np.float64)
    probs, means = balanced_two_expert_probs(logits, 2), balanced_two_expert_score_means(logits, 2)
    probe = RouterProbe(layer, "probs", ("slot_token",))
    expected, marginals = {}, np.zeros((4, 2))
    for chosen, prob in probs.items():
        noise = balanced_two_expert_noise(logits, chosen, means[chosen])
        x_aug = np.concatenate([x, noise], -1)
        _, routed = runner.forward(probe, values, x, {"routing_noise": noise})
        assert routed["slot_token"][0].tolist() == list(chosen)
        out = runner.forward_backward(scored, values, x_aug, cot)
        for name, grad in dict(out["grads"], x=out["grad_x"][:, :4]).items():
            expected[name] = expected.get(name, 0.0) + prob * grad.astype(np.float64)
        marginals[list(chosen), 0] += prob
    marginals[:, 1] = 1.0 - marginals[:, 0]
    _, dense = runner.forward(DenseSkipObjective(layer, cot), values, x)
    token_grads = balanced_two_expert_token_gradients(logits, dense["table"].astype(np.float64), 2)
    logit_grad = target_logit_grad(token_grads, reward, baseline)
    objective = BalancedObjective(layer, cot, marginals, logit_grad)
    exact = runner.forward_backward(objective, dict(values, marginals=marginals.astype(np.float32),
                                                    logit_grad=logit_grad.astype(np.float32)), x, np.zeros_like(x))
    assert np.abs(token_grads.sum(0)).max() > 1e-2  # the sampler's probabilities matter
    if reward == "token":  # a different target: the cross-token terms are not negligible here
        assert np.abs(logit_grad - token_grads.sum(0)).max() > 1e-2
    for name, grad in dict(exact["grads"], x=exact["grad_x"]).items():
        if correction:
            np.testing.assert_allclose(expected[name], grad, rtol=1e-4, atol=1e-5, err_msg=name)
        elif name == "router.weight":
            assert not np.allclose(expected[name], grad, rtol=1e-4, atol=1e-5), "the naive estimator must be biased"


@pytest.mark.parametrize("options,message", [({"reward": "sequence"}, "valid rewards are batch, token"),
                                            ({"baseline": "mean"}, "valid baselines are none, leave_one_out"),
                                            ({"baseline": "leave_one_out"}, "needs reward: token")])
def test_reward_and_baseline_options_are_checked(options, message):
    with pytest.raises(ConfigError, match=message):
        MoELayer(MoEConfig(d_model=4, ffn_hidden=6, num_experts=2, top_k=1, router="balanced", router_options=options))


class Solve:
    """Harness component: balanced_assignment of its input scores [R, T, E]."""

    def __init__(self, capacity: int, solver: str) -> None:
        self.capacity, self.solver = capacity, solver

    def param_specs(self):
        return {}

    def check_inputs(self, scores) -> None:
        return None

    def forward(self, F, params, scores):
        expert = balanced_assignment(F, scores, self.capacity, self.solver, 0.1, 50)
        return scores, {"expert": F.cast(expert, F.float32), "loss": F.zeros((), F.float32)}


def assignment_value(scores: np.ndarray, expert: np.ndarray) -> np.ndarray:
    return np.take_along_axis(scores, expert[..., None].astype(int), -1)[..., 0].sum(-1)


def test_exact_solver_is_the_best_balanced_assignment(runner):
    """T = 6, E = 3, C = 2: against all 90 balanced assignments."""
    scores = np.random.default_rng(12).normal(size=(20, 6, 3)).astype(np.float32)
    _, aux = runner.forward(Solve(2, "exact"), {}, scores)
    every = np.array([a for a in itertools.product(range(3), repeat=6) if np.bincount(a, minlength=3).max() == 2])
    best = np.array([s[np.arange(6), every].sum(-1).max() for s in scores.astype(np.float64)])
    assert all(np.bincount(row.astype(int), minlength=3).tolist() == [2, 2, 2] for row in aux["expert"])
    np.testing.assert_allclose(assignment_value(scores.astype(np.float64), aux["expert"]), best, rtol=1e-6)


def test_sinkhorn_approximates_exact(runner):
    """Default Sinkhorn (temperature 0.1, 50 iterations) on Gumbel-perturbed log-probs,
    T = 8, E = 4: exactly balanced, the exact assignment in most draws, nearly optimal."""
    rng = np.random.default_rng(13)
    scores = (log_softmax(rng.normal(size=(200, 8, 4)), -1) - np.log(-np.log(rng.uniform(size=(200, 8, 4)))))
    scores = scores.astype(np.float32)
    _, exact = runner.forward(Solve(2, "exact"), {}, scores)
    _, approx = runner.forward(Solve(2, "sinkhorn"), {}, scores)
    assert all(np.bincount(row.astype(int), minlength=4).tolist() == [2] * 4 for row in approx["expert"])
    same_draw = (exact["expert"] == approx["expert"]).all(-1).mean()
    gap = (assignment_value(scores, exact["expert"]) - assignment_value(scores, approx["expert"])) / 8
    assert same_draw > 0.9, same_draw
    assert gap.min() > -1e-5 and gap.mean() < 0.01, gap.mean()


def balanced_layer(solver: str) -> MoELayer:
    return MoELayer(MoEConfig(d_model=8, ffn_hidden=8, num_experts=4, top_k=1, router="balanced",
                              router_init_std=0.7, expert_init_std=0.3,
                              router_options={"solver": solver, "exact_max_tokens": 16}))


@pytest.mark.parametrize("solver,tokens", [("exact", 24), ("sinkhorn", 24), ("auto", 16), ("auto", 32)])
def test_every_expert_gets_exactly_its_capacity(runner, solver, tokens):
    layer = balanced_layer(solver)
    probe = RouterProbe(layer, "probs", ("slot_token",))
    values = numpy_weights(probe, seed=14)
    x = random_inputs((tokens, 8), seed=15)
    noise = np.random.default_rng(16).uniform(size=(tokens, 4)).astype(np.float32)
    _, aux = runner.forward(probe, values, x, {"routing_noise": noise})
    assert aux["slot_token"].shape == (4, tokens // 4)
    assert sorted(aux["slot_token"].ravel().astype(int).tolist()) == list(range(tokens))
    _, layer_aux = runner.forward(layer, numpy_weights(layer, seed=14), x)
    np.testing.assert_array_equal(layer_aux["tokens_per_expert"], np.full(4, tokens // 4))
    assert layer_aux["dropped_fraction"] == 0.0
    assert layer.router.solver(tokens) == (solver if solver != "auto" else ("exact" if tokens <= 16 else "sinkhorn"))


def test_layer_routing_matches_the_estimator(runner):
    """With given noise: sigma = scipy's optimum of log p + Gumbel (experts repeated C
    times), slot weights p_{t sigma(t)}, and routing_log_prob = sum_te (s_te - mean_e s_te)
    log p_te for every token, s = 1 + log u."""
    layer = balanced_layer("exact")
    probe = RouterProbe(layer, "probs", ("slot_token", "slot_weight", "routing_log_prob"))
    values = numpy_weights(probe, seed=17)
    x = random_inputs((12, 8), seed=18)
    noise = np.random.default_rng(19).uniform(size=(12, 4)).astype(np.float32)
    _, aux = runner.forward(probe, values, x, {"routing_noise": noise})
    log_p = log_softmax(x.astype(np.float64) @ values["router.weight"], -1)
    perturbed = log_p - np.log(-np.log(noise.astype(np.float64)))
    expert = linear_sum_assignment(-np.repeat(perturbed, 3, axis=1))[1] // 3
    for e in range(4):
        np.testing.assert_array_equal(aux["slot_token"][e], np.nonzero(expert == e)[0])
    np.testing.assert_allclose(aux["slot_weight"], np.exp(log_p)[aux["slot_token"].astype(int), np.arange(4)[:, None]],
                               rtol=1e-5)
    score = 1.0 + np.log(noise.astype(np.float64))
    expected = ((score - score.mean(-1, keepdims=True)) * log_p).sum()
    np.testing.assert_allclose(aux["routing_log_prob"], np.full(12, expected), rtol=1e-4)


def test_exact_solver_in_compiled_train_step(runner):
    """The exact (host) solver inside the backend's train step (ms.jit on MindSpore): one
    AdamW step keeps every expert at capacity and moves the router weights."""
    layer = balanced_layer("exact")
    values = numpy_weights(layer, seed=20)
    module = runner.module(layer, values)

    def objective(F, outputs, target):
        y, aux = outputs
        token_loss = F.mean((y - target) * (y - target), -1)
        score = F.mean(F.stop_gradient(token_loss) * aux["routing_log_prob"])
        return F.mean(token_loss) + aux["loss"] + score, {"tokens_per_expert": aux["tokens_per_expert"]}

    step = make_train_step(runner.name, module, objective, lr=1e-2)
    x = random_inputs((16, 8), seed=21)
    loss, metrics, norm = step.step((x,), (np.ones_like(x),), 1e-2)
    assert np.isfinite(loss) and norm > 0
    np.testing.assert_array_equal(metrics["tokens_per_expert"], np.full(4, 4.0))
    assert np.abs(module.numpy_params()["router.weight"] - values["router.weight"]).max() > 1e-4
