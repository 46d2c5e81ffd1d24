"""LoRA-MoE adapters on the linears of a frozen pretrained transformer (the AdaMoE paper's
Llama2 setting: n true LoRA experts per adapted linear, their routed, weighted output added
to the frozen base output; Zeng et al. 2024, arXiv 2406.13233):

    y = x W^T + (alpha / r) sum_e g_e(x) (x A_e) B_e,     A_e [d_in, r], B_e [r, d_out]

g(x) comes from any registered router over the n true (plus m null) LoRA experts: ``topk``,
or ``adamoe`` with null experts (a null expert adds nothing, so a token that picks only
nulls costs no adapter FLOPs). B starts at zero: the adapted model's logits equal the base
model's before training. Every base parameter is frozen (``trainable=False``); only the
adapters and their routers train.

All n experts' rank-r activations are computed in one matmul (x [T, d_in] @ [d_in, n r]),
weighted by g and mapped back by one matmul ([T, n r] @ [n r, d_out]): no loop over
experts. ``adapter_flops`` counts what a sparse implementation runs: 2 r (d_in + d_out)
per selected true expert per token.

The adapters report their routing through attributes set during the forward, so this model
runs eagerly (torch, MindSpore PyNative), not under ``ms.jit``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Tuple

from core.errors import ConfigError
from core.params import ParamSpec, constant_init, normal_init
from core.rules import TEXT, check_fields, integer, number, setting
from models.metrics import true_assignment_count
from models.moe_config import MoEConfig
from models.routers import router_class
from models.routers.context import routing_context
from models.transformer import Transformer
from models.transformer_config import TransformerConfig

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoRAMoEConfig:
    """Adapters on the ``targets`` projections (attention and dense FFN, or an MoE block's
    shared expert; routed experts are not adapted) of every block, or of the last
    ``last_layers`` blocks (the backward pass then stops there: cheaper)."""

    rank: int = setting(8, integer(1))
    alpha: float = setting(16.0, number(0.0, low_open=True))
    num_experts: int = setting(4, integer(1))
    num_null_experts: int = setting(0, integer(0))
    top_k: int = setting(2, integer(1))
    router: str = setting("topk", TEXT)
    targets: Tuple[str, ...] = TARGETS  # a non-empty subset of TARGETS (validate)
    last_layers: int = setting(0, integer(0))  # adapt only the last N blocks (0: every block)
    balance_loss_coef: float = setting(1e-2, number(0.0))
    z_loss_coef: float = setting(0.0, number(0.0))

    def validate(self) -> "LoRAMoEConfig":
        check_fields(self, "lora")
        unknown = sorted(set(self.targets) - set(TARGETS))
        if unknown or not self.targets:
            raise ConfigError(f"lora.targets={list(self.targets)!r}: choose from {', '.join(TARGETS)}")
        return self


class LoRAMoEAdapter:
    """n LoRA experts and their router on one linear ``<prefix>weight`` [d_out, d_in];
    parameters under ``<prefix>lora_moe.``."""

    def __init__(self, config: LoRAMoEConfig, d_in: int, d_out: int, prefix: str) -> None:
        self.config, self.d_in, self.d_out = config, d_in, d_out
        self.prefix = prefix + "lora_moe."
        moe = MoEConfig(d_model=d_in, ffn_hidden=config.rank, num_experts=config.num_experts,
                        num_null_experts=config.num_null_experts, top_k=config.top_k, router=config.router,
                        balance_loss_coef=config.balance_loss_coef, z_loss_coef=config.z_loss_coef)
        self.router = router_class(config.router)(moe.validate("lora"), self.prefix + "router.")
        self.router.require_causal("LoRA-MoE adapters")
        self.aux: Dict[str, object] = {}

    def param_specs(self) -> Dict[str, ParamSpec]:
        c, p = self.config, self.prefix
        return {**self.router.param_specs(),
                p + "lora_a": ParamSpec((c.num_experts, self.d_in, c.rank), normal_init(self.d_in ** -0.5)),
                p + "lora_b": ParamSpec((c.num_experts, c.rank, self.d_out), constant_init(0.0))}

    def apply(self, F, params: dict, x, y):
        """x [..., d_in], y = x W^T [..., d_out] -> y + the routed LoRA experts' output;
        sets ``self.aux`` (loss, true experts per token, FLOPs) for this call."""
        c, p = self.config, self.prefix
        n, r = c.num_experts, c.rank
        tokens = F.reshape(x, (-1, self.d_in))
        num_tokens = tokens.shape[0]
        routing = self.router.route(F, params, F.cast(tokens, F.float32), routing_context())
        picked = F.one_hot(routing["expert_index"], n + c.num_null_experts, F.float32)
        gates = F.sum(picked * F.expand_dims(routing["expert_weight"], -1), 1)[:, :n]  # [T, n]
        lora_a = F.reshape(F.transpose(params[p + "lora_a"], (1, 0, 2)), (self.d_in, n * r))
        low = F.reshape(F.matmul(tokens, lora_a), (num_tokens, n, r)) * F.expand_dims(F.cast(gates, x.dtype), -1)
        delta = F.matmul(F.reshape(low, (num_tokens, n * r)), F.reshape(params[p + "lora_b"], (n * r, self.d_out)))
        true = true_assignment_count(F, routing["expert_index"], n)
        coefs = self.router.loss_coefs()
        self.aux = {"loss": sum(coefs[name] * value for name, value in routing["losses"].items()),
                    "true_experts_per_token": true / num_tokens,
                    "adapter_flops": true * float(2 * r * (self.d_in + self.d_out))}
        return y + F.reshape(delta, tuple(y.shape)) * (c.alpha / r)


def adaptable(block) -> tuple:
    """A block's components whose projections can take adapters: attention, and the dense FFN
    or the MoE layer's shared expert (routed experts are not adapted)."""
    if not block.is_moe:
        return block.attention, block.ffn
    shared = block.ffn.shared_expert
    return (block.attention,) if shared is None else (block.attention, shared.ffn)


class LoRAMoEModel:
    """A frozen ``Transformer`` with LoRA-MoE adapters. forward(F, params, tokens) ->
    (logits, aux): the base model's aux plus ``loss`` (adapter router losses added),
    ``adapter_true_experts_per_token`` (mean over adapters) and ``adapter_flops`` (sum)."""

    compiles = False  # the adapters report their routing through attributes (module docstring)

    def __init__(self, config: TransformerConfig, lora: LoRAMoEConfig) -> None:
        self.base = Transformer(config)
        self.config, self.lora = config, lora.validate()
        shapes = {name: spec.shape for name, spec in self.base.param_specs().items()}
        self.adapters = []
        for block in self.base.blocks[-lora.last_layers if lora.last_layers else 0:]:
            for component in adaptable(block):
                for name in lora.targets:
                    weight = component.prefix + name + ".weight"
                    if weight in shapes:
                        d_out, d_in = shapes[weight]
                        component.adapters[name] = LoRAMoEAdapter(lora, d_in, d_out, component.prefix + name + ".")
                        self.adapters.append(component.adapters[name])
        if not self.adapters:
            raise ConfigError(f"lora.targets={list(lora.targets)!r}: the model has none of these projections")

    def param_specs(self) -> Dict[str, ParamSpec]:
        specs = {name: replace(spec, trainable=False) for name, spec in self.base.param_specs().items()}
        for adapter in self.adapters:
            specs.update(adapter.param_specs())
        return specs

    def static_key(self) -> tuple:
        """The base model's and every adapter router's ``static_key``."""
        return self.base.static_key() + tuple(adapter.router.static_key() for adapter in self.adapters)

    def check_inputs(self, tokens, domain_ids=None, routing_noise=None) -> None:
        self.base.check_inputs(tokens, domain_ids, routing_noise)

    def forward(self, F, params: dict, tokens, domain_ids=None, routing_noise=None):
        logits, aux = self.base.forward(F, params, tokens, domain_ids, routing_noise)
        auxes = [adapter.aux for adapter in self.adapters]
        aux = dict(aux)
        aux["loss"] = aux["loss"] + sum(a["loss"] for a in auxes)
        aux["adapter_true_experts_per_token"] = F.stop_gradient(
            sum(a["true_experts_per_token"] for a in auxes) / len(auxes))
        aux["adapter_flops"] = F.stop_gradient(sum(a["adapter_flops"] for a in auxes))
        return logits, aux
