"""Run any component (``param_specs`` + ``forward``) on a backend with numpy inputs and
numpy weights, and get numpy outputs and gradients back, so that one test body checks
both frameworks and parity tests compare them directly.

The loss whose gradients are returned is ``sum(y * cotangent) + aux["loss"]``. ``context``
(optional) holds a MoE layer's side inputs as numpy arrays: ``token_ids``, ``domain_ids``,
``routing_noise``.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import numpy as np


class TorchRunner:
    name = "torch"

    def __init__(self) -> None:
        import torch
        self.torch = torch
        torch.use_deterministic_algorithms(False)

    def module(self, component, values, dtype: str = "float32"):
        from backends.torch_shell import TorchModule
        return TorchModule(component, values=values, dtype=dtype)

    def _context(self, context):
        return {k: (None if v is None else self.torch.as_tensor(v)) for k, v in (context or {}).items()}

    def forward(self, component, values, x, context=None, dtype: str = "float32"):
        module = self.module(component, values, dtype)
        with self.torch.no_grad():
            y, aux = module(self.torch.as_tensor(x), **self._context(context))
        return module.ops.to_numpy(y), {k: module.ops.to_numpy(v) for k, v in aux.items()}

    def forward_backward(self, component, values, x, cotangent, context=None):
        module = self.module(component, values)
        xt = self.torch.tensor(x, requires_grad=True)
        y, aux = module(xt, **self._context(context))
        loss = (y * self.torch.as_tensor(cotangent)).sum() + aux["loss"]
        loss.backward()
        grads = {name: (np.zeros_like(values[name]) if p.grad is None else p.grad.numpy())
                 for name, p in module.params().items() if p.requires_grad}
        return {"y": y.detach().numpy(), "aux": {k: module.ops.to_numpy(v) for k, v in aux.items()},
                "loss": float(loss.detach()), "grad_x": xt.grad.numpy(), "grads": grads}


class MindSporeRunner:
    name = "mindspore"

    def __init__(self, mode: str) -> None:
        import mindspore as ms

        from backends.mindspore_shell import select_device
        self.ms = ms
        self.mode = mode
        select_device("cpu", graph_mode=(mode == "graph"))

    def module(self, component, values, dtype: str = "float32"):
        from backends.mindspore_shell import MindSporeModule
        return MindSporeModule(component, values=values, dtype=dtype)

    def _inputs(self, x, context):
        ms = self.ms
        context = context or {}
        dtypes = {"token_ids": np.int32, "domain_ids": np.int32, "routing_noise": np.float32}
        extra = [None if context.get(name) is None else ms.Tensor(np.asarray(context[name]).astype(dtype))
                 for name, dtype in dtypes.items()]
        while extra and extra[-1] is None:
            extra.pop()
        return [ms.Tensor(x)] + extra

    def forward(self, component, values, x, context=None, dtype: str = "float32"):
        module = self.module(component, values, dtype)
        y, aux = module(*self._inputs(x, context))
        return module.ops.to_numpy(y), {k: module.ops.to_numpy(v) for k, v in aux.items()}

    def forward_backward(self, component, values, x, cotangent, context=None):
        ms = self.ms
        module = self.module(component, values)
        inputs = self._inputs(x, context)
        cot = ms.Tensor(cotangent)
        weights = module.trainable_params()

        keys = sorted(module(*inputs)[1])  # GRAPH_MODE returns tuples through grad, not dicts

        def loss_fn(*args):
            y, aux = module(*args)
            return (y * cot).sum() + aux["loss"], y, tuple(aux[k] for k in keys)

        grad_fn = ms.value_and_grad(loss_fn, grad_position=0, weights=weights, has_aux=True)
        (loss, y, aux_values), (grad_x, grad_w) = grad_fn(*inputs)
        aux = dict(zip(keys, aux_values))
        grads = {p.name: g.asnumpy() for p, g in zip(weights, grad_w)}
        return {"y": y.asnumpy(), "aux": {k: v.asnumpy() for k, v in aux.items()}, "loss": float(loss.asnumpy()),
                "grad_x": grad_x.asnumpy(), "grads": grads}


def selected_backend() -> Tuple[str, str]:
    """($MOE_TEST_BACKEND or torch, $MOE_MS_MODE or pynative)."""
    return os.environ.get("MOE_TEST_BACKEND", "torch"), os.environ.get("MOE_MS_MODE", "pynative")


def run_label(name: str, mode: str) -> str:
    """What a test id calls a run: ``torch``, ``mindspore-pynative`` or ``mindspore-graph``."""
    return name if name == "torch" else f"{name}-{mode}"


def make_runner(name: Optional[str] = None, mode: Optional[str] = None):
    """``name``/``mode`` default to ``selected_backend()``."""
    default_name, default_mode = selected_backend()
    name, mode = name or default_name, mode or default_mode
    return TorchRunner() if name == "torch" else MindSporeRunner(mode)


def random_inputs(shape, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def numpy_weights(component, seed: int = 0) -> Dict[str, np.ndarray]:
    from core.params import init_params
    return init_params(component.param_specs(), seed)


PARITY_RTOL, PARITY_ATOL = 1e-4, 1e-5


def assert_runs_match(a: dict, b: dict, rtol: float = PARITY_RTOL, atol: float = PARITY_ATOL) -> None:
    """Two ``forward_backward`` results agree: output, every aux entry, input and weight
    gradients (float32 on different kernels and summation orders: rtol 1e-4, atol 1e-5)."""
    np.testing.assert_allclose(a["y"], b["y"], rtol=rtol, atol=atol)
    assert a["aux"].keys() == b["aux"].keys()
    for key in a["aux"]:
        np.testing.assert_allclose(a["aux"][key], b["aux"][key], rtol=rtol, atol=atol, err_msg=key)
    np.testing.assert_allclose(a["grad_x"], b["grad_x"], rtol=rtol, atol=atol)
    assert a["grads"].keys() == b["grads"].keys()
    for name in a["grads"]:
        np.testing.assert_allclose(a["grads"][name], b["grads"][name], rtol=rtol, atol=atol, err_msg=name)
