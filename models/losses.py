"""Router losses, written once on the op vocabulary ``F``. All inputs are float32."""
from __future__ import annotations


def assignment_counts(F, expert_index, num_slots: int, parallel=None):
    """c_i: assignments to each expert over all (token, slot) pairs, of the global batch when
    ``parallel`` (``core.layout.ExpertParallel``) is given (summed over its data-parallel
    ranks; no gradient flows through counts). expert_index [T, k] -> [num_slots] float32.

    With global counts, each rank's loss N sum_i f_i P_i(local) averages over the ranks to
    the global batch's N sum_i f_i P_i, and so does its gradient."""
    return batch_total(F, F.sum(F.sum(F.one_hot(expert_index, num_slots, F.float32), 0), 0), parallel)


def batch_total(F, counts, parallel=None):
    """Counts of this rank's tokens -> of the global batch (summed over the data-parallel
    ranks of ``parallel``; no gradient); unchanged in a single process."""
    return counts if parallel is None else F.all_reduce(counts, parallel.batch_group)


def switch_balance_loss(F, probs, expert_index, num_experts: int, parallel=None):
    """Switch/GShard load balance: N * sum_i f_i P_i, f_i = share of the T*k assignments
    routed to expert i, P_i = mean router probability of expert i.
    probs [T, N], expert_index [T, k] -> scalar (1.0 when perfectly balanced)."""
    counts = assignment_counts(F, expert_index, num_experts, parallel)
    f = counts / F.sum(counts)
    p = F.mean(probs, 0)
    return num_experts * F.sum(f * p)


def sequence_balance_loss(F, scores, expert_index, num_experts: int, sequences: int):
    """DeepSeek-V3's complementary sequence-wise balance loss (Liu et al. 2024, eq. 17-20): per
    sequence of S tokens, N * sum_i f_i P_i with f_i = share of the sequence's S*k assignments
    routed to expert i and P_i = mean over its tokens of s_i / sum_j s_j; the mean over the B
    sequences. scores [B*S, N] (rows sequence by sequence), expert_index [B*S, k] -> scalar
    (1.0 when every sequence is balanced; the paper's alpha is our coefficient as is)."""
    tokens, k = expert_index.shape
    length = tokens // sequences
    chosen = F.reshape(F.one_hot(expert_index, num_experts, F.float32), (sequences, length * k, num_experts))
    f = F.sum(chosen, 1) / float(length * k)
    shares = F.reshape(scores / F.sum(scores, -1, True), (sequences, length, num_experts))
    return num_experts * F.mean(F.sum(f * F.mean(shares, 1), -1))


def null_bucket_balance_loss(F, probs, expert_index, num_experts: int, num_null: int, parallel=None):
    """AdaMoE balance loss (Zeng et al. 2024): the m null experts form one bucket, each
    null count replaced by the mean count over nulls; f_i = c_i / sum c, P_i = mean prob,
    L = (n + m) * sum_i f_i P_i. probs [T, n+m], expert_index [T, k] -> scalar."""
    num_slots = num_experts + num_null
    counts = assignment_counts(F, expert_index, num_slots, parallel)
    if num_null > 0:
        true_counts = counts[:num_experts]
        null_mean = F.mean(counts[num_experts:], 0, True)
        counts = F.concat([true_counts, null_mean * F.ones((num_null,), F.float32)], 0)
    f = counts / F.sum(counts)
    p = F.mean(probs, 0)
    return num_slots * F.sum(f * p)


def router_z_loss(F, logits):
    """ST-MoE router z-loss: mean over tokens of logsumexp(logits)^2. logits [T, N] -> scalar."""
    lse = F.logsumexp(logits, -1)
    return F.mean(lse * lse)
