"""Balanced router: a perfectly balanced stochastic assignment, every expert exactly
C = T / E tokens, sampled by perturb-and-MAP (Gumbel-Matching), with a score-function
gradient estimator for that sampler (the "balanced" estimator of Kool, Maddison & Mnih
2021, arXiv 2109.11817; the estimator below is derived here, the paper's own is not
available to us).

Sampling, from ``routing_noise`` [T, E] of U[0, 1) values (``F.uniform`` when not given):
  G_te = log p_te + g_te,  g_te = -log(-log u_te) iid Gumbel(0, 1),  p_t = softmax(x_t W);
  sigma = A(G) = argmax over balanced assignments of sum_t G_{t sigma(t)}, computed by a
  solver A of models/routers/assignment_solvers.py. No token is skipped; token t's output
  is y_t = p_{t sigma(t)} h_{sigma(t)}(x_t) (Switch weight).

What is unbiased. G_te has the Gumbel density f(G_te - mu_te) with location
mu_te = log p_te, and sigma = A(G) for a solver A that is a fixed function of G (it does
not depend on the parameters). So, for J_bal = E_G[ sum_t l_t(y_t) ],
  grad J_bal = E[ grad l(y) |_{sigma fixed} + l(y) sum_te s_te grad log p_te ],
  s_te = d/dmu_te log f(G_te - mu_te) = 1 - exp(-g_te) = 1 + log u_te,
with l = sum_t l_t. This holds for ANY such A: with the exact solver it is unbiased for
the expected loss of Gumbel-Matching, with Sinkhorn for the expected loss of the Sinkhorn
sampler actually used (both proofs are the same line; numerically checked for the exact
solver against an exact computation with E = 2, for the score part alone and for the whole
layer's estimator, tests/backend/test_balanced_router.py).
Variance reduction: both solvers are invariant to adding c_t to row t of G, so J_bal is
invariant to mu_t -> mu_t + c_t, i.e. E[l sum_e s_te] = 0 for every t, and replacing s_te
by s_te - mean_e s_te keeps the estimator unbiased (exact solver only would also allow
centring over tokens; Sinkhorn with finitely many iterations is not column-shift
invariant, so this is not done).

What is NOT unbiased: the gradient of the untruncated objective E_{z ~ prod_t p_t}[...]
(the skip router's target). The balanced sampler's distribution q differs from
prod_t p_t (perturb-and-MAP with one Gumbel per (token, expert) is not even the
conditional distribution of prod_t p_t given balanced counts), and an importance
correction would need its marginals q(sigma(t) = e), which have no closed form for E > 2.
``correction: false`` gives the naive per-token estimator l_t grad log p_{t sigma(t)}
(treating sigma(t) as if drawn from p_t): biased for both objectives, kept for comparison.

How the layer computes it: the pathwise part by backpropagation through y; the score part
through ``aux["routing_log_prob"]`` [T], which for every token holds the same scalar
R = sum_te stop_gradient(s_te - mean_e s_te) log p_te (sigma(t) depends on every token's
noise), so sum_t stop_gradient(l_t - b_t) * routing_log_prob[t] = stop_gradient(l - B) R;
the baselines b_t must not depend on the noise. Its variance grows with T * E.

Solvers (``solver`` option): ``exact`` (host, scipy) or ``sinkhorn`` (device); ``auto``
(default) uses exact when T <= ``exact_max_tokens`` (default 256) and Sinkhorn above.
Where exact runs: ``F.linear_sum_assignment`` calls scipy on the host: torch eagerly on
any device (a graph break under torch.compile); MindSpore on CPU through a pyfunc op, in
PyNative and in compiled functions that return tensors or tuples (the train step's
ms.jit, in PyNative or GRAPH_MODE; measured). Not possible there: a GRAPH_MODE Cell call
that returns the layer's aux dict (MindSpore 2.10 compiles dict outputs in a runtime that
rejects pyfunc ops: "The prim is not a PrimitivePy") and Ascend/GPU (no pyfunc kernel):
set ``solver: sinkhorn`` for those. Sinkhorn defaults: temperature 0.1, 50 iterations
(measured trade-off in models/routers/assignment_solvers.py). Needs T divisible by E.
"""
from __future__ import annotations

from dataclasses import dataclass

from models.errors import ConfigError
from models.losses import router_z_loss
from models.routers.assignment_solvers import SOLVERS, balanced_assignment
from models.routers.base import LinearGateRouter, finite_number, require_top1
from models.routers.registry import register_router
from models.routers.sampling import check_routing_noise, fill_slots, places_in_expert, routing_uniforms

SMALLEST_UNIFORM = 1e-20
LARGEST_UNIFORM = 1.0 - 2.0 ** -24


@dataclass
class BalancedOptions:
    solver: str = "auto"
    exact_max_tokens: int = 256
    sinkhorn_temperature: float = 0.1
    sinkhorn_iterations: int = 50
    correction: bool = True


def gumbel_log_uniforms(F, noise):
    """log u [..., T, E] of the clipped uniforms: g = -log(-log u), s = 1 + log u."""
    return F.log(F.clip(noise, SMALLEST_UNIFORM, LARGEST_UNIFORM))


def balanced_sample(F, log_probs, noise, capacity: int, solver: str, temperature: float, iterations: int):
    """Perturb-and-MAP: log_probs [..., T, E], noise [..., T, E] U[0, 1) -> (expert [..., T]
    with every expert exactly ``capacity`` tokens, its one_hot [..., T, E], log u)."""
    log_u = gumbel_log_uniforms(F, noise)
    perturbed = F.stop_gradient(log_probs) - F.log(-log_u)
    expert = balanced_assignment(F, perturbed, capacity, solver, temperature, iterations)
    return expert, F.one_hot(expert, log_probs.shape[-1], F.float32), log_u


def balanced_log_prob(F, log_probs, log_u, one_hot, correction: bool = True):
    """Score term per token [..., T]. With ``correction``: the same value for every token,
    sum_te stop_gradient(s_te - mean_e s_te) log p_te with s = 1 + log u; without: the
    naive log p_{t sigma(t)}. log_probs, log_u, one_hot (of sigma): [..., T, E]."""
    if not correction:
        return F.sum(log_probs * one_hot, -1)
    score = 1.0 + log_u
    centred = F.stop_gradient(score - F.mean(score, -1, True))
    total = F.sum(F.sum(centred * log_probs, -1), -1)
    return F.expand_dims(total, -1) * F.ones(tuple(log_probs.shape[:-1]), F.float32)


@register_router("balanced")
class BalancedRouter(LinearGateRouter):
    Options = BalancedOptions
    causal = False

    def __init__(self, config, prefix: str = "router.") -> None:
        require_top1(config, "balanced")
        super().__init__(config, prefix)
        o = self.options
        if o.solver not in SOLVERS:
            raise ConfigError(f"moe.router_options.solver={o.solver!r}: valid solvers are {', '.join(SOLVERS)}")
        if isinstance(o.exact_max_tokens, bool) or not isinstance(o.exact_max_tokens, int) or o.exact_max_tokens < 0:
            raise ConfigError(f"moe.router_options.exact_max_tokens={o.exact_max_tokens!r}: must be an integer >= 0")
        if not finite_number(o.sinkhorn_temperature) or o.sinkhorn_temperature <= 0:
            raise ConfigError(f"moe.router_options.sinkhorn_temperature={o.sinkhorn_temperature!r}: "
                              "must be a finite number > 0")
        if isinstance(o.sinkhorn_iterations, bool) or not isinstance(o.sinkhorn_iterations, int) \
                or o.sinkhorn_iterations < 1:
            raise ConfigError(f"moe.router_options.sinkhorn_iterations={o.sinkhorn_iterations!r}: "
                              "must be a positive integer")
        if not isinstance(o.correction, bool):
            raise ConfigError(f"moe.router_options.correction={o.correction!r}: must be true or false")

    def solver(self, num_tokens: int) -> str:
        """The solver used for a batch of ``num_tokens`` tokens (``auto`` resolved)."""
        if self.options.solver != "auto":
            return self.options.solver
        return "exact" if num_tokens <= self.options.exact_max_tokens else "sinkhorn"

    def check_noise(self, num_tokens: int, routing_noise) -> None:
        if num_tokens % self.config.num_experts:
            raise ConfigError(f"router 'balanced' needs the batch's token count ({num_tokens}) to be a multiple "
                              f"of moe.num_experts={self.config.num_experts}")
        check_routing_noise(self.name, num_tokens, routing_noise, self.config.num_experts)

    def route(self, F, params: dict, x, context: dict) -> dict:
        """x [T, d] -> slot_token, slot_weight [E, T / E], routing_log_prob [T]."""
        c = self.config
        num_tokens = x.shape[0]
        capacity = num_tokens // c.num_experts
        logits = F.matmul(x, self.param(params, "weight"))
        probs = F.softmax(logits, -1)
        log_probs = F.log_softmax(logits, -1)
        o = self.options
        expert, one_hot, log_u = balanced_sample(F, log_probs, routing_uniforms(F, context, num_tokens, c.num_experts),
                                                 capacity, self.solver(num_tokens), float(o.sinkhorn_temperature),
                                                 o.sinkhorn_iterations)
        place = places_in_expert(F, expert, F.arange(num_tokens, F.index_dtype), c.num_experts)
        slot_token, slot_weight = fill_slots(F, expert, place, place < capacity, F.sum(probs * one_hot, -1),
                                             c.num_experts, capacity)
        return {"logits": logits, "probs": probs, "slot_token": slot_token, "slot_weight": slot_weight,
                "routing_log_prob": balanced_log_prob(F, log_probs, log_u, one_hot, o.correction),
                "requested_assignments": F.ones((), F.float32) * num_tokens,
                "losses": {"z": router_z_loss(F, logits)}}
