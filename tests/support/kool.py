"""Test support for the skip and balanced routers (Kool et al. 2021): harness components
that pass routing noise and add the score-function term, the layers' exact objectives, and
exact references (enumeration for skip, one-dimensional quadrature for balanced with two
experts)."""
from __future__ import annotations

import itertools
import math
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy.integrate import quad
from scipy.special import expit, softmax

from core.params import ParamSpec, constant_init


class CotangentComponent:
    """A layer plus a fixed, non-trainable cotangent [T, d] stored as parameter ``cotangent``."""

    def __init__(self, layer, cotangent: np.ndarray) -> None:
        self.layer = layer
        self.cotangent = np.asarray(cotangent, np.float32)

    def param_specs(self) -> Dict[str, ParamSpec]:
        specs = dict(self.layer.param_specs())
        specs["cotangent"] = ParamSpec(self.cotangent.shape, lambda rng, shape: self.cotangent, trainable=False)
        return specs


class ScoredLayer(CotangentComponent):
    """A MoE layer whose loss is linear per token, l_t = <c_t, y_t>, with the score term
    added: forward(x_aug [T, d + k]) splits x | routing_noise and returns (y, aux) with
    aux["loss"] = layer loss + sum_t stop_gradient(l_t) * routing_log_prob[t]. The harness
    adds sum(y * c), so its gradients are the layer's full estimator for sum_t l_t.
    ``cotangent`` [T, d] is a non-trainable parameter (pass the same array to the harness)."""

    def check_inputs(self, x_aug) -> None:
        d = self.layer.config.d_model
        self.layer.check_inputs(x_aug[..., :d], routing_noise=x_aug[..., d:])

    def forward(self, F, params: dict, x_aug):
        d = self.layer.config.d_model
        y, aux = self.layer.forward(F, params, x_aug[..., :d], routing_noise=x_aug[..., d:])
        token_loss = F.sum(y * params["cotangent"], -1)
        aux["loss"] = aux["loss"] + F.sum(F.stop_gradient(token_loss) * aux["routing_log_prob"])
        return y, aux


class DenseObjective(CotangentComponent):
    """Exact objectives of a top-1 layer with linear token losses, written on every expert:
    with probs p = softmax(x W) and the table L_te = <c_t, p_te h_e(x_t)> (token t's loss
    were it sent to expert e with the Switch weight), aux["loss"] = ``objective`` and
    aux["table"] = L [T, E]; y = 0, so harness gradients are the objective's gradients."""

    def check_inputs(self, x) -> None:
        return None

    def objective(self, F, params: dict, logits, probs, table):
        raise NotImplementedError

    def forward(self, F, params: dict, x):
        c = self.layer.config
        logits = F.matmul(x, params["router.weight"])
        probs = F.softmax(logits, -1)
        every = F.expand_dims(x, 0) * F.ones((c.num_experts,) + tuple(x.shape), F.float32)
        out = self.layer.experts.batched(F, params, every)
        linear = F.sum(out * F.expand_dims(params["cotangent"], 0), -1)
        table = probs * F.transpose(linear, (1, 0))
        return x * 0.0, {"loss": self.objective(F, params, logits, probs, table), "table": table}


class DenseSkipObjective(DenseObjective):
    """The skip layer's target, the expected loss under untruncated routing:
    J = sum_t sum_e p_te L_te."""

    def objective(self, F, params: dict, logits, probs, table):
        return F.sum(probs * table)


class BalancedObjective(DenseObjective):
    """The balanced layer's target J_bal = sum_te Q_te(logits) L_te (Q: Gumbel-Matching's
    marginals P(sigma(t) = e)), as a surrogate with the right gradient at one point:
    sum_te Q_te L_te + sum_te G_te logits_te with constants ``marginals`` Q and
    ``logit_grad`` G = d/dlogits sum_te Q_te(logits) L_te at fixed L."""

    def __init__(self, layer, cotangent: np.ndarray, marginals: np.ndarray, logit_grad: np.ndarray) -> None:
        super().__init__(layer, cotangent)
        self.constants = {"marginals": np.asarray(marginals, np.float32), "logit_grad": np.asarray(logit_grad, np.float32)}

    def param_specs(self) -> Dict[str, ParamSpec]:
        specs = super().param_specs()
        for name, value in self.constants.items():
            specs[name] = ParamSpec(value.shape, lambda rng, shape, value=value: value, trainable=False)
        return specs

    def objective(self, F, params: dict, logits, probs, table):
        return F.sum(params["marginals"] * table) + F.sum(params["logit_grad"] * logits)


class BatchedEstimator:
    """R independent replicas of a router's estimator: trainable ``logits`` [R, T, E] (pass
    one [T, E] array tiled R times as its value), input noise [R, T, k], constant arrays
    ``constants`` (non-trainable parameters, e.g. a loss table). forward returns
    y = surrogate(F, log_probs, noise, params) [R] as [R, 1] (use cotangent ones): the
    gradient w.r.t. replica r's logits is replica r's gradient estimate."""

    def __init__(self, shape, surrogate, constants: Dict[str, np.ndarray]) -> None:
        self.shape = tuple(shape)
        self.surrogate = surrogate
        self.constants = {k: np.asarray(v, np.float32) for k, v in constants.items()}

    def param_specs(self) -> Dict[str, ParamSpec]:
        specs = {"logits": ParamSpec(self.shape, constant_init(0.0))}
        for name, value in self.constants.items():
            specs[name] = ParamSpec(value.shape, lambda rng, shape, value=value: value, trainable=False)
        return specs

    def check_inputs(self, noise) -> None:
        return None

    def forward(self, F, params: dict, noise):
        value = self.surrogate(F, F.log_softmax(params["logits"], -1), noise, params)
        touch = F.sum(F.sum(noise, -1), -1, True) * 0.0  # the harness differentiates its input too
        return F.expand_dims(value, -1) + touch, {"loss": F.zeros((), F.float32)}


def skip_exact_gradient(logits: np.ndarray, table: np.ndarray) -> np.ndarray:
    """grad of J = sum_t sum_e p_te L_te w.r.t. logits [T, E] (untruncated routing)."""
    p = softmax(logits.astype(np.float64), -1)
    return p * (table - (p * table).sum(-1, keepdims=True))


def skip_configurations(probs: np.ndarray) -> List[Tuple[float, np.ndarray, Tuple[int, ...]]]:
    """Every (experts z, arrival order) of T tokens with its probability prod_t p_{t z_t} / T!."""
    num_tokens, num_experts = probs.shape
    orders = list(itertools.permutations(range(num_tokens)))
    out = []
    for z in itertools.product(range(num_experts), repeat=num_tokens):
        pz = float(np.prod(probs[np.arange(num_tokens), z]))
        out += [(pz / len(orders), np.array(z), order) for order in orders]
    return out


def skip_noise(probs: np.ndarray, z: np.ndarray, order) -> np.ndarray:
    """routing_noise [T, 2] that makes the skip router draw experts z and arrival order
    ``order``: u_t0 in the middle of z_t's inverse-CDF interval, u_t1 = place / T."""
    cdf = np.cumsum(probs, -1)
    lower = np.where(z > 0, cdf[np.arange(len(z)), np.maximum(z - 1, 0)], 0.0)
    upper = cdf[np.arange(len(z)), z]
    noise = np.zeros((len(z), 2), np.float32)
    noise[:, 0] = (lower + upper) / 2
    noise[np.array(order), 1] = (np.arange(len(z)) + 0.5) / len(z)
    return noise


def _two_expert_set_integral(a: np.ndarray, chosen: Tuple[int, ...], weighted: Optional[int] = None) -> float:
    """E[h_w 1{expert 0 gets exactly the token set S}] for Gumbel-Matching with E = 2 (h = 1
    when ``weighted`` is None, else h_w = 2 tanh(delta_w / 2) for token w = ``weighted``).
    sigma maximises sum_{t in S} D_t + const with D_t = a_t + delta_t, delta_t logistic (a
    difference of two Gumbels), a_t = logit_t0 - logit_t1, so S is the top-C of D:
    P(S) = int prod_{t in S} (1 - F_t(m)) d[prod_{t not in S} F_t(m)] (m = max of D off S).
    With h: s = F(delta) turns int h f d(delta) into int 2(2s - 1) ds, so token w's factor
    1 - F_w(m) becomes 2 f_w(m) (w in S), and off S its CDF F_w(m) becomes -2 f_w(m) and its
    density f_w(m) becomes 2 tanh((m - a_w) / 2) f_w(m)."""
    rest = [t for t in range(len(a)) if t not in chosen]

    def integrand(m):
        cdf = expit(m - a)
        density = cdf * (1.0 - cdf)
        upper, below, top = 1.0 - cdf, cdf.copy(), density.copy()
        if weighted is not None:
            upper[weighted], below[weighted] = 2.0 * density[weighted], -2.0 * density[weighted]
            top[weighted] = 2.0 * np.tanh((m - a[weighted]) / 2.0) * density[weighted]
        others = sum(top[i] * np.prod([below[j] for j in rest if j != i]) for i in rest)
        return np.prod(upper[list(chosen)]) * others

    return quad(integrand, -60.0, 60.0, epsabs=1e-14, epsrel=1e-12, limit=400)[0]


def balanced_two_expert_probs(logits: np.ndarray, capacity: int) -> Dict[Tuple[int, ...], float]:
    """Gumbel-Matching with E = 2: P(expert 0 gets exactly the token set S) for every S of
    size C (``_two_expert_set_integral``)."""
    a = logits[:, 0].astype(np.float64) - logits[:, 1]
    return {chosen: _two_expert_set_integral(a, chosen) for chosen in itertools.combinations(range(len(a)), capacity)}


def balanced_two_expert_score_means(logits: np.ndarray, capacity: int) -> Dict[Tuple[int, ...], np.ndarray]:
    """E[s_t0 - s_t1 | expert 0 gets S] [T] for every S, s_te = 1 + log u_te the Gumbel score:
    given delta_t = g_t0 - g_t1, E[e^{-g_t1} - e^{-g_t0} | delta_t] = 2 tanh(delta_t / 2), and
    S depends on the noise through delta only."""
    a = logits[:, 0].astype(np.float64) - logits[:, 1]
    out = {}
    for chosen, prob in balanced_two_expert_probs(logits, capacity).items():
        out[chosen] = np.array([_two_expert_set_integral(a, chosen, t) for t in range(len(a))]) / prob
    return out


def balanced_two_expert_noise(logits: np.ndarray, chosen: Tuple[int, ...], score_diff: np.ndarray) -> np.ndarray:
    """routing_noise [T, 2] of U(0, 1) values under which the balanced router gives expert 0
    the token set ``chosen`` and s_t0 - s_t1 = ``score_diff``_t (s = 1 + log u): delta_t =
    g_t0 - g_t1 puts D_t = a_t + delta_t of ``chosen`` 0.5 above the rest (delta_t > 0 on
    ``chosen``, < 0 off it, the signs of score_diff), then e^{-g_t1} (1 - e^{-delta_t}) = score_diff_t."""
    a = logits[:, 0].astype(np.float64) - logits[:, 1]
    inside = np.isin(np.arange(len(a)), chosen)
    top_out = (a[~inside] - 0.5).max()
    target = np.where(inside, np.maximum(a, top_out) + 0.5, a - 0.5)
    delta = target - a
    exp_g1 = score_diff / (1.0 - np.exp(-delta))
    exp_g0 = exp_g1 * np.exp(-delta)
    return np.exp(-np.stack([exp_g0, exp_g1], -1)).astype(np.float32)


def balanced_two_expert_loss(logits: np.ndarray, table: np.ndarray, capacity: int) -> float:
    """E over Gumbel-Matching (E = 2) of sum_t L[t, sigma(t)]."""
    total = 0.0
    for chosen, prob in balanced_two_expert_probs(logits, capacity).items():
        sigma = np.ones(len(table), int)
        sigma[list(chosen)] = 0
        total += prob * table[np.arange(len(table)), sigma].sum()
    return total


def balanced_two_expert_gradient(logits: np.ndarray, table: np.ndarray, capacity: int,
                                 step: float = 1e-4) -> np.ndarray:
    """grad of ``balanced_two_expert_loss`` w.r.t. logits [T, 2], central differences
    (the loss is smooth; quadrature error ~1e-13, so the difference error is ~1e-8)."""
    logits = logits.astype(np.float64)
    grad = np.zeros_like(logits)
    for index in np.ndindex(*logits.shape):
        shift = np.zeros_like(logits)
        shift[index] = step
        grad[index] = (balanced_two_expert_loss(logits + shift, table, capacity)
                       - balanced_two_expert_loss(logits - shift, table, capacity)) / (2 * step)
    return grad


def balanced_two_expert_token_gradients(logits: np.ndarray, table: np.ndarray, capacity: int,
                                        step: float = 1e-4) -> np.ndarray:
    """M [T, T, 2]: M[u] = grad w.r.t. logits [T, 2] of token u's own expected loss
    E[L[u, sigma(u)]] under Gumbel-Matching (E = 2), central differences. sum_u M[u] is
    ``balanced_two_expert_gradient``; M[t, t] (token t's loss in its own logits) is what
    the ``reward: token`` estimator's expectation keeps."""
    out = np.zeros((len(table),) + logits.shape)
    for u in range(len(table)):
        only = np.zeros_like(table, dtype=np.float64)
        only[u] = table[u]
        out[u] = balanced_two_expert_gradient(logits, only, capacity, step)
    return out


def mean_and_standard_error(samples: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Monte Carlo mean and its standard error over the first axis."""
    return samples.mean(0), samples.std(0, ddof=1) / math.sqrt(len(samples))
