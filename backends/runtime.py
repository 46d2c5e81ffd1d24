"""What the framework-free trainer needs from a framework, behind one interface:
device and execution mode, seeding, modules, the train step, and the random generators'
state for checkpoints. Frameworks are imported only when their backend is chosen."""
from __future__ import annotations

import os
import random
from typing import Callable, Dict

import numpy as np

from backends import check_backend
from backends.train_step import TrainStep, make_train_step


class Runtime:
    """One backend for one run. ``device`` as in the run config (auto, cpu, cuda, npu,
    ascend, gpu); ``graph_mode`` selects MindSpore GRAPH_MODE (its train step is compiled
    with ``ms.jit`` either way; torch ignores it). ``ops``: the backend's op vocabulary."""

    def __init__(self, backend: str, device: str = "cpu", graph_mode: bool = True) -> None:
        self.backend = check_backend(backend)
        if self.backend == "torch":
            from backends import torch_shell as shell
            from backends.torch_ops import TorchOps
            self.device = shell.select_device(device)
            if self.device != "cpu" and "LOCAL_RANK" in os.environ:  # one accelerator per process (torchrun)
                self.device = f"{self.device}:{os.environ['LOCAL_RANK']}"
            self.target = self.device
            self.ops = TorchOps(self.device)
        else:
            from backends import mindspore_shell as shell
            from backends.mindspore_ops import MindSporeOps
            self.target = shell.select_device(device, graph_mode=graph_mode)
            self.device = self.target.lower()
            self.ops = MindSporeOps()
        self.shell = shell

    def execution(self, train_step) -> str:
        """How MindSpore runs the step, for the run's first log line ("" on torch)."""
        if self.backend == "torch":
            return ""
        import mindspore as ms
        mode = "GRAPH_MODE" if ms.get_context("mode") == ms.GRAPH_MODE else "PyNative"
        return f", {mode}" + ("" if train_step.compiled else ", forward and backward uncompiled")

    def seed(self, seed: int) -> None:
        self.shell.seed_everything(seed)

    def module(self, component, values: Dict[str, np.ndarray], dtype: str = "float32"):
        """A TorchModule / MindSporeModule holding ``values`` (copied)."""
        if self.backend == "torch":
            return self.shell.TorchModule(component, device=self.device, dtype=dtype, values=values)
        return self.shell.MindSporeModule(component, dtype=dtype, values=values)

    def train_step(self, module, objective: Callable, lr: float, betas, eps: float,
                   weight_decay: float, grad_clip: float, parallel=None, loss_scale=None,
                   execution: str = "auto", distributed_optimizer: bool = False) -> TrainStep:
        """``backends.train_step.make_train_step`` on this runtime's backend."""
        return make_train_step(self.backend, module, objective, lr, betas, eps, weight_decay, grad_clip, parallel,
                               loss_scale, execution, distributed_optimizer)

    def _device_generator(self):
        """torch's generator module of this process's accelerator (``torch.cuda``,
        ``torch.npu``), None on CPU and on MindSpore (one generator for every device)."""
        if self.backend != "torch" or self.device == "cpu":
            return None
        import torch
        return getattr(torch, self.device.split(":")[0], None)

    def rng_state(self) -> Dict[str, np.ndarray]:
        """This process's generators as numpy arrays: the framework's default generator
        (``framework``), the accelerator's (``device``: torch on CUDA or NPU), numpy's global
        generator and Python's ``random``."""
        out = {}
        if self.backend == "torch":
            import torch
            out["framework"] = torch.get_rng_state().numpy().copy()
            accelerator = self._device_generator()
            if accelerator is not None:
                out["device"] = accelerator.get_rng_state(self.device).numpy().copy()
        else:
            import mindspore as ms
            out["framework"] = ms.get_rng_state().asnumpy().copy()
        _, keys, pos, has_gauss, cached = np.random.get_state()
        _, internal, gauss = random.getstate()
        return {**out, "numpy.keys": np.asarray(keys), "numpy.pos": np.asarray(pos),
                "numpy.gauss": np.asarray([has_gauss, cached], np.float64),
                "python": np.asarray(internal, np.int64),
                "python.gauss": np.asarray([gauss is not None, gauss or 0.0], np.float64)}

    def set_rng_state(self, state: Dict[str, np.ndarray]) -> None:
        """Inverse of ``rng_state``. Without ``framework`` (a converted checkpoint), or with one
        saved by the other framework, only numpy's and Python's generators are set: the
        framework generators are not interchangeable."""
        if state.get("framework") is not None:
            self._set_framework_rng(state["framework"])
        accelerator = self._device_generator()
        if accelerator is not None and state.get("device") is not None:
            import torch
            current = accelerator.get_rng_state(self.device)
            if tuple(state["device"].shape) == tuple(current.shape):
                accelerator.set_rng_state(torch.from_numpy(state["device"].astype(np.uint8)), self.device)
        has_gauss, cached = state["numpy.gauss"]
        np.random.set_state(("MT19937", state["numpy.keys"].astype(np.uint32), int(state["numpy.pos"]),
                             int(has_gauss), float(cached)))
        flag, gauss = state["python.gauss"]
        random.setstate((3, tuple(int(v) for v in state["python"]), float(gauss) if flag else None))

    def _set_framework_rng(self, framework: np.ndarray) -> None:
        """Set the framework generator when ``framework`` has its state's shape."""
        if self.backend == "torch":
            import torch
            if framework.shape == tuple(torch.get_rng_state().shape) and framework.dtype == np.uint8:
                torch.set_rng_state(torch.from_numpy(framework.copy()))
        else:
            import mindspore as ms
            current = ms.get_rng_state()
            if framework.shape == tuple(current.shape):
                ms.set_rng_state(ms.Tensor(framework.astype(current.asnumpy().dtype)))
