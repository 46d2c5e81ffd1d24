"""Group-limited expert choice (DeepSeek-V3, Liu et al. 2024, arXiv 2412.19437): the E experts
form G groups of E / G in index order (group g holds experts g E/G .. (g+1) E/G - 1); each
token scores a group by the sum of its two largest choice scores there, keeps the ``topk_group``
best groups and chooses its experts inside them only:

    group_score[t, g] = sum of the top-2 of choice[t, g E/G : (g+1) E/G]
    kept[t]           = top-``topk_group`` groups of group_score[t]
    choice'[t, e]     = choice[t, e] if e's group is in kept[t] else -inf (here -1e9)

The router then takes top-k of choice'. Selection only: no gradient flows through it."""
from __future__ import annotations

EXCLUDED = -1e9  # below every sigmoid or softmax score plus any bias a router learns


def group_limited_choice(F, choice, num_groups: int, groups_kept: int):
    """choice [T, E] float32 selection scores -> [T, E] with the experts of every group outside
    each token's ``groups_kept`` best groups set to ``EXCLUDED``. Needs E divisible by
    ``num_groups`` and at least 2 experts per group (checked by the router's setup)."""
    tokens, experts = choice.shape
    size = experts // num_groups
    grouped = F.reshape(choice, (tokens, num_groups, size))
    group_score = F.sum(F.topk(grouped, 2)[0], -1)
    kept = F.sum(F.one_hot(F.topk(group_score, groups_kept)[1], num_groups, F.float32), 1)
    mask = F.reshape(F.expand_dims(kept, -1) + F.zeros((1, 1, size), F.float32), (tokens, experts))
    return F.where(mask > 0.5, choice, F.zeros((), F.float32) + EXCLUDED)
