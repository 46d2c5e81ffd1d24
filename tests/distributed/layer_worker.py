"""Run under a launcher (torchrun, msrun): every rank runs MoE layer cases with expert
parallelism on its own slice of a global batch and saves its outputs and gradients, plus
the single-process reference on the whole batch, to OUT/<exchange>/rank<r>.npz.

    layer_worker.py BACKEND OUT_DIR EXPERT_PARALLEL [flat|hierarchical]

``hierarchical`` starts the node and rail groups and runs every case twice, with the
hierarchical and with the flat exchange (one launch, both written); ``flat`` runs the flat one.
On MindSpore top-k, LocMoE and AdaMoE with capacity then run again compiled (GRAPH_MODE,
flat exchange) into OUT/compiled, against the same PyNative single-process references.

The reference's router loss coefficients are W times the config's: each rank's loss is
sum(y_r * cot_r) + aux_r["loss"], and the W ranks' router losses average to the global
batch's, so the sum of the ranks' objectives is the reference objective and its gradient
is the sum of the ranks' gradients.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from core.layout import ParallelLayout  # noqa: E402
from core.params import init_params  # noqa: E402
from launch.process_groups import init_process_groups  # noqa: E402
from models.moe_config import MoEConfig  # noqa: E402
from models.moe_layer import MoELayer  # noqa: E402
from parallel.sharding import local_values  # noqa: E402
from tests.support.harness import make_runner  # noqa: E402

D, TOKENS = 8, 12


def cases(lay: ParallelLayout):
    """(name, config, x [W, T, d], values override) for every case of this rank."""
    world, ep, ranks_per_node = lay.world_size, lay.expert_parallel, lay.local_world_size
    rng = np.random.default_rng(0)
    base = MoEConfig(d_model=D, ffn_hidden=16, num_experts=8, top_k=2, router="topk", dispatch="dropless")
    x = rng.standard_normal((world, TOKENS, D)).astype(np.float32)
    yield "dropless_uneven", base, x, {}
    yield "capacity", replace(base, dispatch="capacity", capacity_factor=1.0), x, {}
    # Qwen2-MoE's gated shared expert: a replicated FFN beside the sharded experts
    yield "shared_expert", replace(base, shared_expert_hidden=12, shared_expert_gate=True), x, {}
    yield "expert_choice", replace(base, router="expert_choice", top_k=1, dispatch="capacity"), x, {}
    # every token picks experts 0 and 1: the other ranks' experts receive no rows
    positive = np.abs(x)
    gate = np.full((D, 8), -1.0, np.float32)
    gate[:, :2] = 1.0 + rng.uniform(0, 0.1, (D, 2)).astype(np.float32)
    yield "idle_experts", base, positive, {"router.weight": gate}
    # AdaMoE: rank 0's tokens pick only null experts, so rank 0 sends no rows
    ada = replace(base, router="adamoe", num_null_experts=4)
    signed = positive.copy()
    signed[0] = -signed[0]
    true_gate = (1.0 + rng.uniform(0, 0.1, (D, 8))).astype(np.float32)
    null_gate = (-1.0 + rng.uniform(0, 0.1, (D, 4))).astype(np.float32)
    yield "silent_rank", ada, signed, {"router.weight": true_gate, "router.null_weight": null_gate}
    if world == ep:  # LocMoE: the launcher's nodes as the configured virtual topology; reference = global batch
        per_node = min(ep, ranks_per_node)
        topology = {"nodes": ep // per_node, "devices_per_node": per_node}
        loc = replace(base, router="locmoe", top_k=1, router_options={"topology": topology, "locality_coef": 0.5})
        yield "locmoe_dropless", loc, x, {"router.bias": rng.uniform(-0.1, 0.1, 8).astype(np.float32)}
        yield "locmoe_capacity", replace(loc, dispatch="capacity", router_options={
            **loc.router_options, "capacity_policy": "factor"}), x, {}
    else:  # data parallel > 1, node-aligned or not: each EP group's placement is its own topology
        nodes = sorted({r // ranks_per_node for r in lay.ep_group()})
        topology = {"nodes": len(nodes), "devices_per_node": ep // len(nodes)}
        loc = replace(base, router="locmoe", top_k=1, balance_loss_coef=0.0, z_loss_coef=0.0,
                      router_options={"topology": topology, "locality_coef": 0.5})
        yield "locmoe_groups", loc, x, {"router.bias": rng.uniform(-0.1, 0.1, 8).astype(np.float32)}
    # DeepSeek-V3 / GLM-4.5 routing: sigmoid scores, score-correction bias, 2 of 4 expert groups,
    # routed scaling, an ungated shared expert; gpt-oss routing: a trainable router bias
    grouped = replace(base, router="aux_free", shared_expert_hidden=12,
                      router_options={"n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5})
    yield "grouped_sigmoid", grouped, x, {"router.bias": rng.uniform(-0.1, 0.1, 8).astype(np.float32)}
    yield "gate_bias", replace(base, router_options={"gate_bias": True}), x, {
        "router.bias": rng.uniform(-0.5, 0.5, 8).astype(np.float32)}


def fixed_buffer_cases(lay: ParallelLayout):
    """Cases whose exchanges compile (``models.dispatch.expert_parallel.exchange_compiles``):
    top-k and LocMoE with capacity, and AdaMoE (null experts cut before the buffers). Each
    compile costs 15-25 s here at load 10, so Switch and expert choice (slots), which
    compiled in a manual run, are left out of the suite."""
    for name, config, x, override in cases(lay):
        if name in ("capacity", "locmoe_capacity"):
            yield name, config, x, override
    ada = MoEConfig(d_model=D, ffn_hidden=16, num_experts=8, top_k=2, router="adamoe", num_null_experts=4,
                    dispatch="capacity", capacity_factor=1.0)
    yield "adamoe_capacity", ada, np.random.default_rng(3).standard_normal((lay.world_size, TOKENS, D)).astype(np.float32), {}


def run_cases(runner, lay: ParallelLayout, exchanges: dict, selected) -> dict:
    """Every case of ``selected`` on each exchange and its reference -> {exchange: arrays}."""
    saved = {exchange: {} for exchange in exchanges}
    for name, config, x, override in selected:
        full = MoELayer(config)
        values = {**init_params(full.param_specs(), 1), **override}
        cot = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
        reference = single_process(runner, config, values, x, cot, lay, name)
        for exchange, (parallel, run) in exchanges.items():
            start = time.perf_counter()
            mine = run(MoELayer(config, parallel=parallel), local_values(values, full.param_specs(), lay.expert_parallel,
                                                                          lay.ep_rank), x[lay.rank], cot[lay.rank])
            print(f"rank {lay.rank}: {exchange} case {name}: {time.perf_counter() - start:.1f} s", flush=True)
            saved[exchange].update(results(name, config, mine, reference))
    return saved


def compiled(runner):
    """``runner.forward_backward`` with the layer compiled (MindSpore GRAPH_MODE), PyNative after."""
    import mindspore as ms

    def run(*args):
        ms.set_context(mode=ms.GRAPH_MODE)
        try:
            return runner.forward_backward(*args)
        finally:
            ms.set_context(mode=ms.PYNATIVE_MODE)
    return run


def main() -> int:
    backend, out_dir, ep = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    all_to_all = sys.argv[4] if len(sys.argv) > 4 else "flat"
    runner = make_runner(backend, "pynative")
    run = init_process_groups(backend, "cpu", ep, timeout_s=120, all_to_all=all_to_all)
    flat = replace(run.expert_parallel(), hierarchy=None)
    exchanges = {"flat": (flat, runner.forward_backward)}
    if all_to_all == "hierarchical":
        exchanges["hierarchical"] = (run.expert_parallel(), runner.forward_backward)
    lay = run.layout
    saved = run_cases(runner, lay, exchanges, cases(lay))
    if backend == "mindspore":
        saved.update(run_cases(runner, lay, {"compiled": (flat, compiled(runner))}, fixed_buffer_cases(lay)))
    for exchange, arrays in saved.items():
        (out_dir / exchange).mkdir(parents=True, exist_ok=True)
        np.savez(out_dir / exchange / f"rank{lay.rank}.npz", world=lay.world_size, ep=ep, rank=lay.rank,
                 ranks_per_node=lay.local_world_size, all_to_all=exchange, **arrays)
    return 0


def reference_kind(name: str, config: MoEConfig) -> str:
    """``ep_group``: LocMoE with data parallelism, against the single process on this rank's
    EP group's tokens (its placement as virtual nodes; no balance loss, so no global counts);
    ``global``: dropless and LocMoE with one EP group, against the whole batch; ``per_rank``:
    capacity modes, against each rank's tokens alone (capacity per source rank)."""
    if name == "locmoe_groups":
        return "ep_group"
    return "global" if config.dispatch == "dropless" or config.router == "locmoe" else "per_rank"


def single_process(runner, config: MoEConfig, values, x, cot, lay: ParallelLayout, name: str = "") -> dict:
    """The single-process reference: the global batch (or this rank's EP group's part of it)
    with the router losses scaled by its number of ranks, or this rank's tokens alone."""
    kind = reference_kind(name, config)
    if kind == "per_rank":
        return runner.forward_backward(MoELayer(config), values, x[lay.rank], cot[lay.rank])
    ranks = lay.ep_group() if kind == "ep_group" else list(range(x.shape[0]))
    w = len(ranks)
    options = dict(config.router_options)
    if "locality_coef" in options:
        options["locality_coef"] *= w
    scaled = replace(config, balance_loss_coef=config.balance_loss_coef * w, z_loss_coef=config.z_loss_coef * w,
                     router_options=options)
    return runner.forward_backward(MoELayer(scaled), values, x[ranks].reshape(-1, D), cot[ranks].reshape(-1, D))


def results(name: str, config: MoEConfig, mine: dict, ref: dict) -> dict:
    """The arrays the tests read for one case: this rank's run and the reference."""
    saved = {f"{name}.y": mine["y"], f"{name}.grad_x": mine["grad_x"], f"{name}.aux_loss": mine["aux"]["loss"],
             f"{name}.tokens_per_expert": mine["aux"]["tokens_per_expert"],
             f"{name}.dispatch": np.asarray(config.dispatch),
             f"{name}.reference": np.asarray(reference_kind(name, config)),
             f"{name}.own_node_share": mine["aux"].get("own_node_share", np.float32(-1)),
             f"ref.{name}.own_node_share": ref["aux"].get("own_node_share", np.float32(-1)),
             f"ref.{name}.y": ref["y"], f"ref.{name}.grad_x": ref["grad_x"], f"ref.{name}.aux_loss": ref["aux"]["loss"]}
    for key in ("a2a_sent_rows", "a2a_needed_rows", "a2a_cross_node_rows"):
        saved[f"{name}.{key}"] = mine["aux"].get(key, np.float32(0))
    saved.update({f"{name}.grad.{key}": value for key, value in mine["grads"].items()})
    saved.update({f"ref.{name}.grad.{key}": value for key, value in ref["grads"].items()})
    return saved


if __name__ == "__main__":
    sys.exit(main())
