"""Peer MoE implementations, configured like our layer (d, ffn, experts, top-k, tokens,
SwiGLU experts, our initial weights) and timed the same way. Differences that cannot be
configured away are written into each row's note.

- HF transformers MixtralSparseMoeBlock: dropless; ``eager`` (loop over experts) and
  ``grouped_mm`` (torch.nn.functional.grouped_mm) experts implementations; on the settings'
  device and dtype (its router too). The others run on the CPU in float32 only.
- DeepSpeed ``deepspeed.moe.layer.MoE`` (gloo, world size 1, DS_ACCELERATOR=cpu): top-2
  gating with capacity (drop_tokens=True, ceil(cf * 2T / E)) or without (drop_tokens=False,
  capacity = the largest expert load); 2nd-expert Gumbel sampling off.
- st-moe-pytorch MoE: capacity buffers via dense dispatch/combine einsums; its threshold
  policy is set so every token's 2nd expert is always used, capacity_factor_train = cf * k
  (its capacity formula has no k).
- fairscale MOELayer + Top2Gate: capacity fixed at 2T/E (cf 1.0) and 2nd expert sampled
  with Gumbel noise (neither is configurable).
"""
from __future__ import annotations

import os
import socket
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import nn

from scripts.bench.common import BenchSettings, Case, layer_weights, prepare
from scripts.bench.torch_cases import torch_dtype, torch_step

GROUP = "peers"


class SwiGLUExpert(nn.Module):
    """One expert exactly as ours: (silu(x W_gate) * (x W_up)) W_down, weights [d, f], [f, d]."""

    def __init__(self, w_gate: np.ndarray, w_up: np.ndarray, w_down: np.ndarray) -> None:
        super().__init__()
        self.w_gate = nn.Parameter(torch.tensor(w_gate))
        self.w_up = nn.Parameter(torch.tensor(w_up))
        self.w_down = nn.Parameter(torch.tensor(w_down))

    def forward(self, x):
        return (nn.functional.silu(x @ self.w_gate) * (x @ self.w_up)) @ self.w_down


def experts_from(weights: Dict[str, np.ndarray]) -> List[SwiGLUExpert]:
    return [SwiGLUExpert(weights["experts.w_gate"][e], weights["experts.w_up"][e], weights["experts.w_down"][e])
            for e in range(weights["experts.w_up"].shape[0])]


def load_expert_copies(modules: Sequence[nn.Module], weights: Dict[str, np.ndarray]) -> None:
    """Give each (deep-copied) expert module its own expert's weights."""
    with torch.no_grad():
        for module, expert in zip(modules, experts_from(weights)):
            module.load_state_dict(expert.state_dict())


def router_rows(weights: Dict[str, np.ndarray]) -> torch.Tensor:
    """Our router weight [d, E] as an nn.Linear weight [E, d]."""
    return torch.tensor(np.ascontiguousarray(weights["router.weight"].T))


def ensure_dist() -> None:
    """A one-process gloo group (DeepSpeed and fairscale need torch.distributed)."""
    import torch.distributed as dist
    if dist.is_initialized():
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    dist.init_process_group("gloo", rank=0, world_size=1)


# Peak resident memory of a [T, E, C]-dispatch peer's fwd+bwd over the bytes of one float
# [T, E, C] tensor, measured alone (heap malloc, d=256, ffn=1024, 8 experts, /usr/bin/time):
# st-moe-pytorch 10.4 (6.5 GiB at 8,192 tokens), fairscale 9.1 (18.2 GiB at 16,384 tokens);
# rounded up. The rest of the torch process (dense, ours, HF, DeepSpeed: 2.3 GiB at 16,384
# tokens) must fit beside it.
DISPATCH_COPIES = {"st-moe": 11, "fairscale": 10}
RESERVE_BYTES = 3 << 30


def check_memory(elements: int, what: str, copies: int) -> None:
    """Refuse (an error row, not an out-of-memory kill of the whole torch process) a case
    whose ``elements``-float tensor, held ``copies`` times at the peak of a step, would not
    fit in MemAvailable beside RESERVE_BYTES for the process's other cases."""
    need = elements * 4 * copies
    with open("/proc/meminfo") as meminfo:
        available = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    if need + RESERVE_BYTES > available:
        raise MemoryError(f"refused: {what} needs about {need / 2**30:.0f} GiB "
                          f"+ {RESERVE_BYTES / 2**30:.0f} for the other cases, {available / 2**30:.0f} GiB available")


def cpu_float32_only(settings: BenchSettings, peer: str) -> None:
    """Refuse (an error row) a peer set up here for the CPU in float32 only."""
    if settings.device != "cpu" or settings.dtype != "float32":
        raise ValueError(f"{peer} runs on cpu in float32 only here (asked: {settings.device}, {settings.dtype})")


def hf_case(settings: BenchSettings, implementation: str) -> Case:
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    s, w = settings, layer_weights(settings)
    config = MixtralConfig(hidden_size=s.d_model, intermediate_size=s.ffn_hidden, num_local_experts=s.num_experts,
                           num_experts_per_tok=s.top_k, router_jitter_noise=0.0, hidden_act="silu")
    config._experts_implementation = implementation
    block = MixtralSparseMoeBlock(config)
    with torch.no_grad():
        block.gate.weight.copy_(router_rows(w))
        gate_up = np.concatenate([w["experts.w_gate"], w["experts.w_up"]], axis=2).transpose(0, 2, 1)
        block.experts.gate_up_proj.copy_(torch.tensor(np.ascontiguousarray(gate_up)))
        block.experts.down_proj.copy_(torch.tensor(np.ascontiguousarray(w["experts.w_down"].transpose(0, 2, 1))))
    block.to(device=settings.device, dtype=torch_dtype(settings))

    def forward(x):
        return block(x), 0.0

    import transformers
    note = f"transformers {transformers.__version__}; no aux loss in the block (Mixtral adds it at model level)"
    step = torch_step(forward, block.parameters(), (1, s.tokens, s.d_model), s)
    return Case(f"hf-mixtral {implementation}", GROUP, "dropless", step, "ours torch dropless", note)


def deepspeed_case(settings: BenchSettings, drop_tokens: bool) -> Case:
    cpu_float32_only(settings, "deepspeed")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    from deepspeed.moe.layer import MoE
    s, w = settings, layer_weights(settings)
    ensure_dist()
    deepspeed.init_distributed(dist_backend="gloo")
    template = experts_from(w)[0]
    moe = MoE(hidden_size=s.d_model, expert=template, num_experts=s.num_experts, ep_size=1, k=s.top_k,
              capacity_factor=s.capacity_factor, eval_capacity_factor=s.capacity_factor, min_capacity=4,
              drop_tokens=drop_tokens, use_rts=False, top2_2nd_expert_sampling=False)
    moe.set_deepspeed_parallelism()
    with torch.no_grad():
        moe.deepspeed_moe.gate.wg.weight.copy_(router_rows(w))
    load_expert_copies(moe.deepspeed_moe.experts.deepspeed_experts, w)

    def forward(x):
        y, l_aux, _ = moe(x)
        return y, l_aux * 0.01

    dispatch = "capacity" if drop_tokens else "dropless"
    note = (f"deepspeed {deepspeed.__version__}; "
            + (f"capacity ceil(cf*2T/E)={s.capacity()}, gates renormalised after drops" if drop_tokens
               else "drop_tokens=False: capacity = largest expert load (padded buffers)"))
    step = torch_step(forward, moe.parameters(), (1, s.tokens, s.d_model), s)
    return Case(f"deepspeed MoE {dispatch}", GROUP, dispatch, step, f"ours torch {dispatch}", note)


def st_moe_case(settings: BenchSettings) -> Case:
    cpu_float32_only(settings, "st-moe-pytorch")
    from st_moe_pytorch import MoE
    s, w = settings, layer_weights(settings)
    slots = max(min(s.tokens, int(s.tokens * s.capacity_factor * s.top_k / s.num_experts)), 4)
    check_memory(s.tokens * s.num_experts * slots, f"its dense [T, E, C] dispatch ({s.tokens}x{s.num_experts}x{slots})",
                 DISPATCH_COPIES["st-moe"])
    moe = MoE(dim=s.d_model, num_experts=s.num_experts, gating_top_n=s.top_k,
              threshold_train=1e-9 if s.top_k == 2 else (1e-9,) * (s.top_k - 1),
              capacity_factor_train=s.capacity_factor * s.top_k, experts=nn.ModuleList(experts_from(w)),
              balance_loss_coef=1e-2, router_z_loss_coef=1e-3, is_distributed=False)
    with torch.no_grad():
        moe.gate.to_gates.weight.copy_(router_rows(w))

    def forward(x):
        out = moe(x)
        return out.outputs, out.total_aux_loss

    capacity = max(min(s.tokens, int(s.tokens * s.capacity_factor * s.top_k / s.num_experts)), 4)
    note = (f"capacity_factor_train={s.capacity_factor * s.top_k:g} (capacity int(cf*T/E)={capacity}); "
            "threshold 1e-9 so the 2nd expert is always used; dense [T,E,C] dispatch/combine")
    step = torch_step(forward, moe.parameters(), (1, s.tokens, s.d_model), s)
    return Case("st-moe-pytorch capacity", GROUP, "capacity", step, "ours torch capacity", note)


def fairscale_case(settings: BenchSettings) -> Case:
    cpu_float32_only(settings, "fairscale")
    from fairscale.nn.moe import MOELayer, Top2Gate
    s, w = settings, layer_weights(settings)
    if s.top_k != 2 or s.tokens % s.num_experts:
        raise ValueError("fairscale Top2Gate is top-2 only and needs tokens divisible by num_experts")
    check_memory(s.tokens * 2 * s.tokens, f"its dense [S, E, C] combine weights ({s.tokens}x{s.num_experts}x"
                                          f"{2 * s.tokens // s.num_experts})", DISPATCH_COPIES["fairscale"])
    ensure_dist()
    gate = Top2Gate(s.d_model, s.num_experts)
    with torch.no_grad():
        gate.wg.weight.copy_(router_rows(w))
    moe = MOELayer(gate, nn.ModuleList(experts_from(w)))

    def forward(x):
        y = moe(x)
        return y, moe.l_aux * 0.01

    note = (f"capacity 2T/E={2 * s.tokens // s.num_experts} (cf 1.0, fixed); 2nd expert Gumbel-sampled (fixed); "
            "gates renormalised after drops")
    step = torch_step(forward, moe.parameters(), (s.num_experts, s.tokens // s.num_experts, s.d_model), s)
    return Case("fairscale MOELayer+Top2Gate", GROUP, "capacity", step, None, note)


def cases(settings: BenchSettings, peers: Sequence[str]) -> List[Case]:
    """The chosen peers (each built in this process; one that fails is an error row)."""
    builders = {
        "hf-eager": [("hf-mixtral eager", "dropless", lambda: hf_case(settings, "eager"))],
        "hf-grouped_mm": [("hf-mixtral grouped_mm", "dropless", lambda: hf_case(settings, "grouped_mm"))],
        "deepspeed": [("deepspeed MoE dropless", "dropless", lambda: deepspeed_case(settings, False)),
                      ("deepspeed MoE capacity", "capacity", lambda: deepspeed_case(settings, True))],
        "st-moe": [("st-moe-pytorch capacity", "capacity", lambda: st_moe_case(settings))],
        "fairscale": [("fairscale MOELayer+Top2Gate", "capacity", lambda: fairscale_case(settings))],
    }
    return [prepare(name, GROUP, dispatch, build) for peer in peers for name, dispatch, build in builders[peer]]
