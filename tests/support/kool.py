"""Test support for the skip and balanced routers (Kool et al. 2021): harness components
that pass routing noise and add the score-function term, and exact references
(enumeration for skip, one-dimensional quadrature for balanced with two experts)."""
from __future__ import annotations

import itertools
import math
from typing import Dict, List, Tuple

import numpy as np
from scipy.integrate import quad
from scipy.special import expit, softmax

from models.params import ParamSpec, constant_init


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


class NoisyRouterProbe:
    """A layer's router alone with routing noise: forward(x_aug [T, d + k]) -> (probs,
    aux) with the routing tensors named in ``keys`` as float32 and a zero loss."""

    def __init__(self, layer, keys) -> None:
        self.layer = layer
        self.keys = tuple(keys)

    def param_specs(self) -> Dict[str, ParamSpec]:
        return self.layer.router.param_specs()

    def check_inputs(self, x_aug) -> None:
        d = self.layer.config.d_model
        self.layer.check_inputs(x_aug[..., :d], routing_noise=x_aug[..., d:])

    def forward(self, F, params: dict, x_aug):
        d = self.layer.config.d_model
        routing = self.layer.router.route(F, params, x_aug[..., :d], {"routing_noise": x_aug[..., d:]})
        aux = {key: F.cast(routing[key], F.float32) for key in self.keys}
        aux["loss"] = F.zeros((), F.float32)
        return routing["probs"], aux


class DenseSkipObjective(CotangentComponent):
    """The exact expected loss of the skip layer under untruncated routing with linear
    token losses: J = sum_t sum_e p_te <c_t, p_te h_e(x_t)>, every expert on every token.
    Returned as aux["loss"] with y = 0, so harness gradients are grad J."""

    def check_inputs(self, x) -> None:
        return None

    def forward(self, F, params: dict, x):
        c = self.layer.config
        probs = F.softmax(F.matmul(x, params["router.weight"]), -1)
        every = F.expand_dims(x, 0) * F.ones((c.num_experts,) + tuple(x.shape), F.float32)
        out = self.layer.experts.batched(F, params, every)
        linear = F.sum(out * F.expand_dims(params["cotangent"], 0), -1)
        total = F.sum(F.transpose(probs * probs, (1, 0)) * linear)
        return x * 0.0, {"loss": total}


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


def balanced_two_expert_probs(logits: np.ndarray, capacity: int) -> Dict[Tuple[int, ...], float]:
    """Gumbel-Matching with E = 2: P(expert 0 gets exactly the token set S) for every S of
    size C. sigma maximises sum_{t in S} D_t + const with D_t = a_t + logistic noise,
    a_t = logit_t0 - logit_t1 (a difference of two Gumbels is logistic), so S is the top-C
    of D and P(S) = int prod_{t in S} (1 - F_t(m)) d[prod_{t not in S} F_t(m)]."""
    a = logits[:, 0].astype(np.float64) - logits[:, 1]
    num_tokens = len(a)
    out = {}
    for chosen in itertools.combinations(range(num_tokens), capacity):
        rest = [t for t in range(num_tokens) if t not in chosen]

        def integrand(m, chosen=chosen, rest=rest):
            above = np.prod([1.0 - expit(m - a[t]) for t in chosen])
            cdfs = [expit(m - a[t]) for t in rest]
            density = sum(cdfs[i] * (1.0 - cdfs[i]) * np.prod(cdfs[:i] + cdfs[i + 1:]) for i in range(len(rest)))
            return above * density

        out[chosen] = quad(integrand, -60.0, 60.0, epsabs=1e-14, epsrel=1e-12, limit=400)[0]
    return out


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


def mean_and_standard_error(samples: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Monte Carlo mean and its standard error over the first axis."""
    return samples.mean(0), samples.std(0, ddof=1) / math.sqrt(len(samples))
