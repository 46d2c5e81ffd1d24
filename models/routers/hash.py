"""Hash layers (Roller et al. 2021): a fixed token-id -> expert table, no learned router.

expert(t) = table[token_id(t)], weight 1, top-1, no loss. Tables (``table`` option):
- ``random``: a seeded random permutation of the ids dealt round-robin (ids per expert
  differ by at most 1);
- ``balanced``: frequency-balanced from a token-count file (``counts_file``, lines
  ``token_id count``): greedy largest-first bin packing, so every expert gets about the same
  share of the corpus' tokens.
The table is a non-trainable parameter ``table`` [vocab_size] (float32 holding integers), so
it travels with checkpoints. Needs ``token_ids`` with every batch.

Tables per layer (``shared_table``, default false): every MoE layer draws its own table from
(``seed``, layer index) (for ``balanced``: the order among ids of equal count, so every layer
keeps the balance bound); ``shared_table: true`` gives all layers the table of ``seed`` alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from core.errors import ConfigError
from core.params import ParamSpec
from core.rules import TEXT, one_of, optional, setting
from models.routers.base import Router
from models.routers.context import RoutingContext
from models.routers.registry import register_router
from models.routers.token_tables import (
    TokenTableOptions,
    check_ids,
    frequency_balanced_table,
    load_token_counts,
    random_table,
    table_rng,
    table_spec,
)

TABLES = ("random", "balanced")


@dataclass
class HashOptions(TokenTableOptions):
    table: str = setting("random", one_of(*TABLES, noun="tables"))
    counts_file: Optional[str] = setting(None, optional(TEXT))


@register_router("hash")
class HashRouter(Router):
    Options = HashOptions
    needs_context = ("token_ids",)
    top1_only = True
    null_experts = False

    def setup(self) -> None:
        o = self.options
        if (o.table == "balanced") != (o.counts_file is not None):
            raise ConfigError("moe.router_options.counts_file: table 'balanced' needs a token-count file "
                              "and table 'random' takes none")
        self.counts = None if o.counts_file is None else load_token_counts(o.counts_file, o.vocab_size)

    def weight_specs(self) -> Dict[str, ParamSpec]:
        """The table [vocab_size] of this layer (``layer_index``)."""
        o, n = self.options, self.config.num_experts
        rng = table_rng(o.seed, self.layer_index, o.shared_table)
        if self.counts is not None:
            return {"table": table_spec(frequency_balanced_table(self.counts, n, rng))}
        return {"table": table_spec(random_table(o.vocab_size, n, rng))}

    def check_context(self, context: RoutingContext) -> None:
        check_ids(context["token_ids"], "token_ids", self.options.vocab_size, "moe.router_options.vocab_size")

    def route(self, F, params: dict, x, context: RoutingContext) -> dict:
        """x [T, d], context token_ids [...] (T in all) -> expert_index [T, 1], weight [T, 1] = 1."""
        num_tokens = x.shape[0]
        ids = F.reshape(F.cast(context["token_ids"], F.index_dtype), (num_tokens,))
        expert = F.cast(F.gather_rows(self.param(params, "table"), ids), F.index_dtype)
        return {"expert_index": F.reshape(expert, (num_tokens, 1)),
                "expert_weight": F.ones((num_tokens, 1), F.float32), "losses": {}}
