"""Our MoE layer on torch (eager), and the dense SwiGLU reference with the same active FLOPs,
on the settings' device and dtype."""
from __future__ import annotations

from typing import Any, Callable, List, Sequence

from scripts.bench.common import BenchSettings, Case, dense_weights, inputs, layer_weights, prepare

GROUP = "torch"
DENSE = "dense SwiGLU ffn*k torch (reference)"


def torch_dtype(settings: BenchSettings):
    import torch
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[settings.dtype]


def torch_step(forward: Callable, params: Sequence[Any], x_shape, settings: BenchSettings) -> Callable:
    """A step: zero grads, forward(x) -> (y, aux_loss), loss = sum(y * cot) + aux_loss,
    backward, then wait for the device; returns y [T, d] (a tensor on the device). x (also
    differentiated) is reshaped to x_shape, on ``settings.device`` in ``settings.dtype``."""
    import torch
    x_np, cot_np = inputs(settings)
    x = torch.tensor(x_np.reshape(x_shape), device=settings.device, dtype=torch_dtype(settings), requires_grad=True)
    cotangent = torch.tensor(cot_np.reshape(x_shape), device=settings.device, dtype=torch_dtype(settings))
    params = list(params)
    synchronize = torch.cuda.synchronize if settings.device.startswith("cuda") else (lambda: None)

    def step():
        for p in params + [x]:
            p.grad = None
        y, aux_loss = forward(x)
        loss = (y * cotangent).sum() + aux_loss
        loss.backward()
        synchronize()
        return y.detach().reshape(-1, y.shape[-1])
    return step


def dense_case(settings: BenchSettings) -> Case:
    import torch
    w = {k: torch.nn.Parameter(torch.tensor(v, device=settings.device, dtype=torch_dtype(settings)))
         for k, v in dense_weights(settings).items()}

    def forward(x):
        hidden = torch.nn.functional.silu(x @ w["w_gate"]) * (x @ w["w_up"])
        return hidden @ w["w_down"], 0.0

    step = torch_step(forward, w.values(), (settings.tokens, settings.d_model), settings)
    return Case(DENSE, GROUP, "dense", step, note=f"hidden {settings.ffn_hidden * settings.top_k}, no router")


def ours_case(settings: BenchSettings, dispatch: str) -> Case:
    from backends.torch_shell import TorchModule
    from models.moe_layer import MoELayer
    module = TorchModule(MoELayer(settings.moe_config(dispatch)), device=settings.device, dtype=settings.dtype,
                         values=layer_weights(settings))

    def forward(x):
        y, aux = module(x)
        return y, aux["loss"]

    step = torch_step(forward, module.parameters(), (settings.tokens, settings.d_model), settings)
    note = f"capacity {settings.capacity()}" if dispatch == "capacity" else ""
    return Case(f"ours torch {dispatch}", GROUP, dispatch, step, note=note)


def cases(settings: BenchSettings, dispatches: Sequence[str]) -> List[Case]:
    """The dense reference, then our layer in each dispatch mode."""
    built = [prepare(DENSE, GROUP, "dense", lambda: dense_case(settings))]
    for dispatch in dispatches:
        built.append(prepare(f"ours torch {dispatch}", GROUP, dispatch, lambda d=dispatch: ours_case(settings, d)))
    return built
