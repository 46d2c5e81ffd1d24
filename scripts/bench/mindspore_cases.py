"""Our MoE layer on MindSpore (GRAPH_MODE or PyNative, one mode per process: MindSpore's
mode is global), and the same dense SwiGLU reference run through the same shell."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Sequence

from scripts.bench.common import BenchSettings, Case, dense_weights, inputs, layer_weights, prepare
from scripts.bench.torch_cases import DENSE


class DenseSwiGLU:
    """The dense reference as a framework-free component, so the same MindSporeModule shell
    (and so the same compile path) runs it. Weights come from ``dense_weights``."""

    def __init__(self, weights: Dict[str, Any]) -> None:
        from core.params import ParamSpec, normal_init
        self.specs = {name: ParamSpec(value.shape, normal_init(0.02)) for name, value in weights.items()}

    def param_specs(self):
        return self.specs

    def check_inputs(self, x) -> None:
        return None

    def forward(self, F, params: dict, x):
        hidden = F.silu(F.matmul(x, params["w_gate"])) * F.matmul(x, params["w_up"])
        return F.matmul(hidden, params["w_down"]), {"loss": F.zeros((), F.float32)}


def make_step(module, settings: BenchSettings) -> Callable:
    """``fwd_bwd_step`` on the benchmark's inputs."""
    import mindspore as ms
    x_np, cot_np = inputs(settings)
    return fwd_bwd_step(module, ms.Tensor(x_np), ms.Tensor(cot_np))


def fwd_bwd_step(module, x, cotangent) -> Callable:
    """value_and_grad of sum(y * cotangent) + aux loss w.r.t. x and the weights (compiled on
    the first call in GRAPH_MODE); the step returns y as numpy, which also synchronises."""
    import mindspore as ms

    def loss_fn(inp):
        y, aux = module(inp)
        return (y * cotangent).sum() + aux["loss"], y

    grad_fn = ms.value_and_grad(loss_fn, grad_position=0, weights=module.trainable_params(), has_aux=True)

    def step():
        (loss, y), _ = grad_fn(x)
        loss.asnumpy()
        return y.asnumpy()
    return step


def ms_case(settings: BenchSettings, mode: str, dispatch: str) -> Case:
    from backends.mindspore_shell import MindSporeModule
    from models.moe_layer import MoELayer
    if dispatch == "dense":
        values = dense_weights(settings)
        module = MindSporeModule(DenseSwiGLU(values), values=values)
    else:
        module = MindSporeModule(MoELayer(settings.moe_config(dispatch)), values=layer_weights(settings))
    compare = DENSE if dispatch == "dense" else f"ours torch {dispatch}"
    note = "compiled in the first warm-up step" if mode == "graph" else ""
    return Case(case_name(mode, dispatch), f"ms-{mode}", dispatch, make_step(module, settings), compare, note)


def case_name(mode: str, dispatch: str) -> str:
    return f"{'dense SwiGLU ffn*k' if dispatch == 'dense' else 'ours ' + dispatch} ms-{mode}"


def cases(settings: BenchSettings, mode: str, dispatches: Sequence[str]) -> List[Case]:
    """Set MindSpore's mode (once, in this spawned process), then build every case."""
    os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ warnings (graph expander chatter) off
    from backends.mindspore_shell import select_device
    select_device("cpu", graph_mode=(mode == "graph"))
    return [prepare(case_name(mode, d), f"ms-{mode}", d, lambda d=d: ms_case(settings, mode, d))
            for d in ("dense",) + tuple(dispatches)]
