"""The thin PyTorch shell: device and dtype selection, seeding, and an ``nn.Module`` that
holds a component's parameters and calls its framework-free ``forward`` with ``TorchOps``."""
from __future__ import annotations

import random
from typing import Dict, Optional

import numpy as np
import torch
from torch import nn

from backends.host_values import HostValues
from backends.torch_ops import TorchOps
from core.errors import ConfigError
from core.params import init_params

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def npu_available() -> bool:
    """torch_npu imports only with CANN installed; try it rather than guess."""
    try:
        import torch_npu  # noqa: F401
    except Exception:
        return False
    return torch.npu.is_available()


def select_device(name: str) -> str:
    """``cpu``, ``cuda``, ``npu``/``ascend`` or ``auto`` (cuda, then npu, then cpu)."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "npu" if npu_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but torch sees no CUDA device; use device: cpu or auto")
        return "cuda"
    if name in ("npu", "ascend"):
        if not npu_available():
            raise ConfigError(f"device={name} but torch_npu (with CANN) is not importable; use device: cpu or auto")
        return "npu"
    raise ConfigError(f"device={name!r}: valid devices are auto, cpu, cuda, npu, ascend")


def check_dtype(dtype: str, device: str) -> torch.dtype:
    """The torch dtype for a config name, after checking that a matmul runs in it here."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: valid dtypes are {', '.join(DTYPES)}")
    try:
        probe = torch.ones((2, 2), dtype=DTYPES[dtype], device=device)
        torch.matmul(probe, probe)
    except Exception as error:
        raise ConfigError(f"dtype={dtype} cannot run on torch device {device}: {str(error).splitlines()[0]}") from None
    return DTYPES[dtype]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TorchModule(HostValues, nn.Module):
    """Holds a component's parameters (names as in ``param_specs``, '.' stored as '__')
    and runs ``component.forward(F, params, *inputs)``."""

    compiles_by_default = False  # torch.compile costs a compile per shape: opt in

    def __init__(self, component, seed: int = 0, device: str = "cpu", dtype: str = "float32",
                 values: Optional[Dict[str, np.ndarray]] = None) -> None:
        super().__init__()
        self.component = component
        self.ops = TorchOps(device)
        self.specs = component.param_specs()
        torch_dtype = check_dtype(dtype, device)
        values = init_params(self.specs, seed) if values is None else values
        for name, spec in self.specs.items():
            tensor = torch.tensor(np.asarray(values[name]), device=device)  # a copy: never alias the caller's arrays
            tensor = tensor.to(torch.float32 if spec.float32 else torch_dtype)
            if spec.trainable:
                self.register_parameter(name.replace(".", "__"), nn.Parameter(tensor))
            else:
                self.register_buffer(name.replace(".", "__"), tensor)

    def params(self) -> dict:
        return {name: getattr(self, name.replace(".", "__")) for name in self.specs}

    def forward(self, *inputs, **kwargs):
        self.component.check_inputs(*inputs, **kwargs)
        return self.component.forward(self.ops, self.params(), *inputs, **kwargs)

    def inference(self, fn, compiled: bool):
        """``fn(F, params, *args)`` as a function of ``args``, run without autograd
        (``torch.inference_mode``); the body under ``torch.compile`` when ``compiled``."""
        def body(*args):
            return fn(self.ops, self.params(), *args)
        body = torch.compile(body) if compiled else body

        def run(*args):
            with torch.inference_mode():
                return body(*args)
        return run

    def _assign(self, parameter, value) -> None:
        with torch.no_grad():
            parameter.copy_(torch.as_tensor(np.asarray(value)).to(parameter.dtype))
