"""The thin MindSpore shell: device and dtype selection, execution mode, seeding, and an
``nn.Cell`` that holds a component's parameters and calls its framework-free ``forward``
with ``MindSporeOps``. ``construct`` compiles under GRAPH_MODE and ``ms.jit``."""
from __future__ import annotations

import contextlib
import functools
import io
import os
import random
from typing import Dict, Optional

import mindspore as ms
import numpy as np
from mindspore import nn

from backends.host_values import HostValues
from backends.mindspore_ops import MindSporeOps
from core.errors import ConfigError
from core.params import init_params

DTYPES = {"float32": ms.float32, "bfloat16": ms.bfloat16, "float16": ms.float16}
TARGETS = {"cpu": "CPU", "cuda": "GPU", "gpu": "GPU", "npu": "Ascend", "ascend": "Ascend"}


def device_available(target: str) -> bool:
    """Whether this MindSpore build can run on ``CPU``, ``GPU`` or ``Ascend`` here (the probe's
    library-loading chatter goes to a buffer, not the user's terminal)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return bool(ms.hal.is_available(target))
        except Exception:
            return False


def cpu_threads() -> int:
    """MindSpore's CPU kernel threads for this process: ``$OMP_NUM_THREADS`` (``scripts/
    perf_env.sh`` exports the node's cores shared among its processes), else the cores this
    process may use. MindSpore's own default is 25 per process: two processes on two cores
    ran 50 threads, and a data-parallel step took three times as long."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    return int(threads) if threads.isdigit() and int(threads) > 0 else len(os.sched_getaffinity(0))


@functools.cache  # once per process: MindSpore refuses a second setting
def _limit_cpu_threads() -> None:
    ms.device_context.cpu.op_tuning.threads_num(cpu_threads())


def select_device(name: str, graph_mode: bool = False) -> str:
    """Set MindSpore's device (``cpu``, ``cuda``/``gpu``, ``npu``/``ascend`` or ``auto``: Ascend,
    then GPU, then CPU) and execution mode; returns the MindSpore target name. Must run
    before any op."""
    if name == "auto":
        target = next((t for t in ("Ascend", "GPU") if device_available(t)), "CPU")
    elif name in TARGETS:
        target = TARGETS[name]
        if not device_available(target):
            raise ConfigError(f"device={name} but this MindSpore build cannot use {target}; use device: cpu or auto")
    else:
        raise ConfigError(f"device={name!r}: valid devices are auto, cpu, cuda, gpu, npu, ascend")
    ms.set_device(target)
    ms.set_context(mode=ms.GRAPH_MODE if graph_mode else ms.PYNATIVE_MODE)
    if target == "CPU":
        ms.runtime.launch_blocking()
        _limit_cpu_threads()
    return target


def check_dtype(dtype: str) -> ms.Type:
    """The MindSpore dtype for a config name, after checking that a matmul runs in it here."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: valid dtypes are {', '.join(DTYPES)}")
    try:
        probe = ms.ops.ones((2, 2), DTYPES[dtype])
        ms.ops.matmul(probe, probe).asnumpy()
    except Exception as error:
        raise ConfigError(f"dtype={dtype} cannot run on MindSpore device "
                          f"{ms.get_context('device_target')}: {str(error).splitlines()[0]}") from None
    return DTYPES[dtype]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    ms.set_seed(seed)


class MindSporeModule(HostValues, nn.Cell):
    """Holds a component's parameters (MindSpore names as in ``param_specs``) and runs
    ``component.forward(F, params, *inputs)``."""

    compiles_by_default = True

    def __init__(self, component, seed: int = 0, dtype: str = "float32",
                 values: Optional[Dict[str, np.ndarray]] = None) -> None:
        super().__init__()
        self.component = component
        self.ops = MindSporeOps()
        self.specs = component.param_specs()
        self.names = tuple(self.specs)
        ms_dtype = check_dtype(dtype)
        values = init_params(self.specs, seed) if values is None else values
        parameters = []
        for name in self.names:
            spec = self.specs[name]
            tensor = ms.Tensor(np.asarray(values[name], dtype=np.float32), ms.float32 if spec.float32 else ms_dtype)
            parameters.append(ms.Parameter(tensor, name=name, requires_grad=spec.trainable))
        self.parameters = ms.ParameterTuple(parameters)

    def params(self) -> dict:
        """name -> Parameter. Written as a comprehension: GRAPH_MODE keeps parameter shapes
        static through it, but not through ``dict(zip(...))``."""
        return {name: parameter for name, parameter in zip(self.names, self.parameters)}

    def __call__(self, *inputs):
        self.component.check_inputs(*inputs)
        return super().__call__(*inputs)

    def construct(self, *inputs):
        return self.component.forward(self.ops, self.params(), *inputs)

    def inference(self, fn, compiled: bool):
        """``fn(F, params, *args)`` as a function of ``args``, without gradients: compiled by
        ``ms.jit`` (args: tensors one by one, since a tuple argument is a compile-time constant;
        the Parameters are read in place, so ``load_numpy`` reaches it), or in PyNative on the
        parameters' ``stop_gradient``, taken once here."""
        if compiled:
            def body(*args):
                return fn(self.ops, self.params(), *args)
            return ms.jit(body)

        params = {name: ms.ops.stop_gradient(p) for name, p in self.params().items()}

        def run(*args):
            return fn(self.ops, params, *args)
        return run

    def _assign(self, parameter, value) -> None:
        parameter.copy_(ms.Tensor(np.asarray(value, dtype=np.float32), parameter.dtype))
