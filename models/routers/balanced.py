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
through ``aux["routing_log_prob"]`` [T], which with ``reward: batch`` (default) holds for
every token the same scalar R = sum_te stop_gradient(c_te) log p_te, c_te = s_te - mean_e s_te
(sigma(t) depends on every token's noise), so sum_t stop_gradient(l_t - b_t) *
routing_log_prob[t] = stop_gradient(l - B) R; the baselines b_t must not depend on the noise.

Variance, and ``reward: token``. With the batch reward every token's router logits get
(l - B) c_t: the whole batch's loss times that token's own noise, against a pathwise term of
order l_t / T per token, so its size grows with T (and E). Measured on the language model of
configs/experiments/routers_side_by_side.yaml (T = 1,024, E = 8, two MoE layers, l ~ 8.3 at
initialisation, B = 0): score-term gradient norm 2.6-3.0e4 against 1.2 for the rest; a
constant baseline can remove only the mean of l, not the T-fold amplification of c_t.
``reward: token`` keeps only each token's own noise: routing_log_prob[t] =
sum_e stop_gradient(c_te) log p_te, so the score term is sum_t l_t c_t . grad log p_t.
Since E[f(G) s_te] = d/dmu_te E[f(G)] for any f (the identity above), its expectation is
  sum_t d/dmu_t E[l_t]   (each token's own loss differentiated in its own logits only),
which drops the cross terms d/dmu_u E[l_t], u != t: how token u's logits move token t's
assignment through the shared capacity. A biased estimate of grad J_bal; checked by exact
enumeration (tests/backend/test_balanced_router.py: its expectation equals the own-logit
partials, which differ from grad J_bal). In a language model l_t also depends on other
tokens' routing through attention (as for skip).
``baseline: leave_one_out`` (``reward: token`` only; with the batch reward every token's
reward would cancel): b_t = the mean loss of the other tokens (models/routers/sampling.py);
it depends on token t's noise through the other tokens' assignments and adds a bias of
order 1 / T: its expectation is sum_t (d/dmu_t E[l_t] - mean_{u != t} d/dmu_t E[l_u]).
Score-term gradient norms in the same measurement: token reward 26-29, with leave_one_out
0.53-0.57 (skip: 8-10 and 0.20-0.21). configs/balanced.yaml uses token + leave_one_out.
Validation loss after that LM's 200 steps (torch, seed 0): batch reward 8.06, token +
leave_one_out 6.01, and with the score term left out (the pathwise router gradient alone,
biased) 5.38, dense 5.36: what remains of the gap is the score term's variance (still 4-6x
the pathwise norm after 100 steps, when the per-token losses spread).

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

from core.errors import ConfigError
from core.rules import integer, number, one_of, setting
from models.losses import router_z_loss
from models.routers.assignment_solvers import SOLVERS, balanced_assignment
from models.routers.context import RoutingContext
from models.routers.registry import register_router
from models.routers.sampling import (
    SampledRouter,
    ScoreTermOptions,
    fill_slots,
    leave_one_out,
    places_in_expert,
    routing_uniforms,
)

SMALLEST_UNIFORM = 1e-20
LARGEST_UNIFORM = 1.0 - 2.0 ** -24
REWARDS = ("batch", "token")


@dataclass
class BalancedOptions(ScoreTermOptions):
    solver: str = setting("auto", one_of(*SOLVERS, noun="solvers"))
    exact_max_tokens: int = setting(256, integer(0))
    sinkhorn_temperature: float = setting(0.1, number(0.0, low_open=True))
    sinkhorn_iterations: int = setting(50, integer(1))
    reward: str = setting("batch", one_of(*REWARDS, noun="rewards"))


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


def balanced_log_prob(F, log_probs, log_u, one_hot, correction: bool = True, reward: str = "batch"):
    """Score term per token [..., T], with s = 1 + log u and c = stop_gradient(s - mean_e s):
    ``reward: batch``, the same value sum_te c_te log p_te for every token; ``token``, token
    t's own sum_e c_te log p_te; without ``correction``: the naive log p_{t sigma(t)}.
    log_probs, log_u, one_hot (of sigma): [..., T, E]."""
    if not correction:
        return F.sum(log_probs * one_hot, -1)
    score = 1.0 + log_u
    centred = F.stop_gradient(score - F.mean(score, -1, True))
    own = F.sum(centred * log_probs, -1)
    if reward == "token":
        return own
    return F.expand_dims(F.sum(own, -1), -1) * F.ones(tuple(log_probs.shape[:-1]), F.float32)


@register_router("balanced")
class BalancedRouter(SampledRouter):
    Options = BalancedOptions

    def setup(self) -> None:
        o = self.options
        if o.baseline == "leave_one_out" and o.reward == "batch" and o.correction:
            raise ConfigError("moe.router_options.baseline=leave_one_out needs reward: token "
                              "(with the batch reward every token's score is the same and would cancel)")

    @property
    def noise_width(self) -> int:
        return self.config.num_experts

    def solver(self, num_tokens: int) -> str:
        """The solver used for a batch of ``num_tokens`` tokens (``auto`` resolved)."""
        if self.options.solver != "auto":
            return self.options.solver
        return "exact" if num_tokens <= self.options.exact_max_tokens else "sinkhorn"

    def check_noise(self, num_tokens: int, routing_noise) -> None:
        if num_tokens % self.config.num_experts:
            raise ConfigError(f"router 'balanced' needs the batch's token count ({num_tokens}) to be a multiple "
                              f"of moe.num_experts={self.config.num_experts}")
        super().check_noise(num_tokens, routing_noise)

    def route(self, F, params: dict, x, context: RoutingContext) -> dict:
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
        score = balanced_log_prob(F, log_probs, log_u, one_hot, o.correction, o.reward)
        if o.baseline == "leave_one_out":
            score = leave_one_out(F, score)
        return {"logits": logits, "probs": probs, "slot_token": slot_token, "slot_weight": slot_weight,
                "routing_log_prob": score,
                "requested_assignments": F.ones((), F.float32) * num_tokens,
                "losses": {"z": router_z_loss(F, logits)}}
