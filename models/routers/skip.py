"""Skip router: stochastic top-1 routing with capacity and an unbiased gradient estimator
(the "skip" estimator of Kool, Maddison & Mnih 2021, arXiv 2109.11817; the weights below
are derived here, the paper's own are not available to us).

Sampling, from ``routing_noise`` [T, 2] of U[0, 1) values (``F.uniform`` when not given):
  p_t = softmax(x_t W) [E];  z_t = #{e < E-1 : P_te <= u_t0} with P_t = cumsum(p_t), so
  z_t ~ Cat(p_t) (inverse CDF); the tokens arrive in ascending order of u_t1 (a uniformly
  random order); expert e keeps the first C = ceil(capacity_factor * T / E) arrivals that
  chose it, the others skip the layer (y_t = 0: residual only).
  A kept token's output is y_t = p_{t z_t} h_{z_t}(x_t) (Switch weight).

Objective: the expected loss under *untruncated* routing (every token processed by its z_t)
  J = E_{z ~ prod_t p_t}[ sum_t l_t(y_t(z_t)) ],
with l_t token t's downstream loss. Since the z_t are independent,
  grad J = E_z[ sum_t g_t(z_t) ],  g_t = grad l_t(y_t) |_{z fixed}        (pathwise: experts,
                                                                          gate p_{t z_t}, x)
                                       + l_t(y_t) grad log p_{t z_t}      (score function).
Skipping. Let n_e = #{t : z_t = e} and kappa_t = 1[t is kept]. Given z the arrival order is
uniform, so each of the n_e tokens at expert e is among its first C with probability
  pi_t = P(kappa_t = 1 | z) = min(1, C / n_{z_t}).
A kept token's output equals its untruncated output, so g_t is computable exactly for kept
tokens, and the Horvitz-Thompson sum
  G = sum_t (kappa_t / pi_t) g_t(z_t)
has E[G | z] = sum_t g_t(z_t), hence E[G] = grad J: unbiased. A baseline b_t that does not
depend on z_t keeps it unbiased: E[(kappa_t / pi_t) b_t grad log p_{t z_t}] =
E_{z_-t}[b_t E_{z_t}[grad log p_{t z_t}]] = 0.

How the layer computes G:
- pathwise part: the gradient (not the value) of each kept slot's contribution is multiplied
  by 1 / pi = max(1, n_e / C) (``slot_grad_scale``, per expert), so backpropagation through
  y gives sum_t (kappa_t / pi_t) grad l_t;
- score part: ``aux["routing_log_prob"]`` [T] = (kappa_t / pi_t) log p_{t z_t} (weights held
  constant); the caller adds sum_t stop_gradient(l_t - b_t) * routing_log_prob[t] to its loss.

What this needs. Exactly unbiased for the router and expert parameters (and for x through the
experts) when the loss is a sum of per-token terms l_t that depend on the routing only
through z_t (independent datapoints, as in the paper; a single MoE layer with per-token
losses), and the caller adds the score term. Without it the router is trained by the
pathwise term alone, <dl/dy_t, y_t> grad log p_{t z_t}: a first-order surrogate of
(l_t(y_t) - l_t(0)) grad log p_{t z_t}, exact only when l_t is affine in y_t. Parameters
outside the layer see the truncated batch (skipped tokens as residual-only).
Baseline (``baseline`` option). ``none`` (default): b_t = 0, exactly unbiased as above. In a
language model with l_t ~ 8 nats this term dominates the gradient (measured on the
routers_side_by_side LM at initialisation: score-term gradient norm 8-10 against 1.2 for
the rest). ``leave_one_out``: b_t = the mean loss of the other tokens of the batch
(``models.routers.sampling.leave_one_out`` applied to routing_log_prob, so the caller's score
term is unchanged; score-term gradient norm 0.20-0.21 in the measurement above, the setting
of configs/skip.yaml; validation loss after that LM's 200 steps 6.12 without a baseline, 5.62
with it, 5.38 with no score term at all (pathwise only, biased), dense 5.36). It needs no state and adapts at once, but the other tokens' losses
depend on z_t through the competition for capacity (a token taking a slot can skip another)
and, in a language model, through attention, so it is exactly unbiased only when no token
can be skipped (C >= T); otherwise the bias is the mean over u != t of
E[(kappa_t / pi_t) l_u grad log p_{t z_t}]: a mean, not a sum, of cross terms that are each
small when C is large (one token changes another's chance to be kept by about 1/C); both
cases checked by exact enumeration in tests/backend/test_skip_router.py.
``correction: false`` drops the 1 / pi weights (naive stochastic routing with capacity):
biased, kept for comparison. Losses: Switch balance loss on the sampled experts and z-loss,
added as usual (regularisers outside the estimator; coefficients 0 give the estimator alone).
Checked numerically in tests/backend/test_skip_router.py: Monte Carlo mean vs the exact
gradient, and the exact expectation of the whole layer's estimator over every draw.
Not causal: whether a token is kept depends on tokens that arrive before it in the random
order, later positions included.
"""
from __future__ import annotations

from models.losses import router_z_loss, switch_balance_loss
from models.routers.context import RoutingContext
from models.routers.registry import register_router
from models.routers.sampling import SampledRouter, fill_slots, leave_one_out, places_in_expert, routing_uniforms

NOISE_WIDTH = 2


def skip_sample(F, probs, noise, capacity: int) -> dict:
    """Sample experts and apply capacity. probs [..., T, E], noise [..., T, 2] U[0, 1) ->
    expert [..., T] (index dtype), one_hot [..., T, E] float32, place [..., T] (earlier
    arrivals at the same expert), kept [..., T] bool, weight [..., T] float32 = 1 / pi_t =
    max(1, n_{z_t} / C), counts [..., E] float32 (arrivals n_e). No gradient."""
    num_experts = probs.shape[-1]
    cdf = F.cumsum(F.stop_gradient(probs), -1)
    below = F.sum(F.cast(cdf <= F.expand_dims(noise[..., 0], -1), F.float32), -1)
    expert = F.cast(F.minimum(below, F.ones((), F.float32) * (num_experts - 1)), F.index_dtype)
    rank = F.argsort(F.argsort(noise[..., 1]))
    place = places_in_expert(F, expert, rank, num_experts)
    one_hot = F.one_hot(expert, num_experts, F.float32)
    counts = F.sum(one_hot, -2)
    arrivals = F.sum(one_hot * F.expand_dims(counts, -2), -1)
    weight = F.maximum(arrivals / capacity, F.ones((), F.float32))
    return {"expert": expert, "one_hot": one_hot, "place": place, "kept": place < capacity,
            "weight": weight, "counts": counts}


def skip_log_prob(F, log_probs, sample: dict, correction: bool = True):
    """Score term per token: (kappa_t / pi_t) log p_{t z_t} [..., T] (kappa_t log p_{t z_t}
    without ``correction``); the factor carries no gradient. log_probs [..., T, E]."""
    factor = F.cast(sample["kept"], F.float32)
    if correction:
        factor = factor * sample["weight"]
    return F.stop_gradient(factor) * F.sum(log_probs * sample["one_hot"], -1)


@register_router("skip")
class SkipRouter(SampledRouter):
    noise_width = NOISE_WIDTH

    def route(self, F, params: dict, x, context: RoutingContext) -> dict:
        """x [T, d] -> slot_token, slot_weight, slot_grad_scale [E, C], routing_log_prob [T]."""
        c = self.config
        num_tokens = x.shape[0]
        capacity = c.capacity(num_tokens)
        logits = F.matmul(x, self.param(params, "weight"))
        probs = F.softmax(logits, -1)
        noise = routing_uniforms(F, context, num_tokens, NOISE_WIDTH)
        sample = skip_sample(F, probs, noise, capacity)
        chosen_prob = F.sum(probs * sample["one_hot"], -1)
        slot_token, slot_weight = fill_slots(F, sample["expert"], sample["place"], sample["kept"], chosen_prob,
                                             c.num_experts, capacity)
        scale = F.ones((c.num_experts, capacity), F.float32)
        if self.options.correction:
            scale = scale * F.expand_dims(F.maximum(sample["counts"] / capacity, F.ones((), F.float32)), -1)
        losses = {"balance": switch_balance_loss(F, probs, F.expand_dims(sample["expert"], -1), c.num_experts,
                                                  self.parallel),
                  "z": router_z_loss(F, logits)}
        score = skip_log_prob(F, F.log_softmax(logits, -1), sample, self.options.correction)
        if self.options.baseline == "leave_one_out":
            score = leave_one_out(F, score)
        return {"logits": logits, "probs": probs, "slot_token": slot_token, "slot_weight": slot_weight,
                "slot_grad_scale": scale, "routing_log_prob": score,
                "requested_assignments": F.ones((), F.float32) * num_tokens, "losses": losses}
