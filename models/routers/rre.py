"""PanGu-Sigma random routed experts, RRE (Ren et al. 2023): two fixed levels, no learned router.

Level 1: the E experts are split into ``num_domains`` contiguous groups of E / num_domains;
a token goes to the group of its domain (``domain_ids``: which corpus its sample came from).
Level 2: inside group g a fixed, seeded random table maps the token id to one of the group's
experts (a random permutation of the ids dealt round-robin: balanced within one id).

expert(t) = table[domain(t) * vocab_size + token_id(t)], weight 1, top-1, no loss. The
[num_domains * vocab_size] table holds global expert indices and is a non-trainable
parameter. Needs ``token_ids`` and ``domain_ids`` with every batch.

Tables per layer (``shared_table``, default false): every MoE layer draws its own table,
seeded from (``seed``, layer index); ``shared_table: true`` gives all layers the table of
``seed`` alone. What PanGu-Sigma does is not settled by the paper as far as PAPERS.md records
it: it describes one fixed random token-id -> expert mapping inside each domain group and does
not say whether the MoE layers share it. Per layer is the default because a shared table sends
a token id to the same expert index in every layer, so its routes through the model are fully
correlated; keep ``shared_table: true`` to test the other reading.

Domain placement (``domains_by_node: true``, with ``data.node_domains``): the data's domain
ids are numbered in node order, so group g (experts g E/D .. (g+1) E/D - 1) lives on node
g // (D / N); the trainer checks that each domain is read on that node only
(``training.data.node_placement.check_rre_placement``), and then no row leaves its node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

from core.errors import ConfigError
from core.params import ParamSpec
from core.rules import FLAG, integer, setting
from models.routers.base import Router
from models.routers.context import RoutingContext
from models.routers.registry import register_router
from models.routers.token_tables import TokenTableOptions, check_ids, random_table, table_rng, table_spec


@dataclass
class RREOptions(TokenTableOptions):
    num_domains: int = setting(0, integer(1))  # required
    domains_by_node: bool = setting(False, FLAG)


@register_router("rre")
class RandomRoutedExpertsRouter(Router):
    Options = RREOptions
    needs_context = ("domain_ids", "token_ids")
    top1_only = True
    null_experts = False

    def setup(self) -> None:
        o, n = self.options, self.config.num_experts
        if n % o.num_domains:
            raise ConfigError(f"moe.router_options.num_domains={o.num_domains} must divide "
                              f"moe.num_experts={n} (experts are split into equal domain groups)")
        self.group_size = n // o.num_domains

    def weight_specs(self) -> Dict[str, ParamSpec]:
        """The table [num_domains * vocab_size] of this layer (``layer_index``)."""
        o = self.options
        rng = table_rng(o.seed, self.layer_index, o.shared_table)
        table = np.concatenate([g * self.group_size + random_table(o.vocab_size, self.group_size, rng)
                                for g in range(o.num_domains)])
        return {"table": table_spec(table)}

    def check_context(self, context: RoutingContext) -> None:
        check_ids(context["domain_ids"], "domain_ids", self.options.num_domains, "moe.router_options.num_domains")
        check_ids(context["token_ids"], "token_ids", self.options.vocab_size, "moe.router_options.vocab_size")

    def route(self, F, params: dict, x, context: RoutingContext) -> dict:
        """x [T, d], context token_ids and domain_ids [...] (T in all) -> expert_index [T, 1]
        (inside the domain's group), expert_weight [T, 1] = 1."""
        num_tokens = x.shape[0]
        ids = F.reshape(F.cast(context["token_ids"], F.index_dtype), (num_tokens,))
        domain = F.reshape(F.cast(context["domain_ids"], F.index_dtype), (num_tokens,))
        row = domain * self.options.vocab_size + ids
        expert = F.cast(F.gather_rows(self.param(params, "table"), row), F.index_dtype)
        return {"expert_index": F.reshape(expert, (num_tokens, 1)),
                "expert_weight": F.ones((num_tokens, 1), F.float32), "losses": {}}
