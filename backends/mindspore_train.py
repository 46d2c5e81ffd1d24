"""The MindSpore hooks of the train step (``backends.train_step`` holds the policy): a thin
shell around ``mindspore.experimental.optim.AdamW`` (PyTorch's AdamW maths, runs on CPU,
GPU and Ascend; its learning rate is a Parameter, so changing it per step does not
recompile) that runs a framework-free ``objective(F, module_outputs, *targets) -> (loss,
metrics)`` on a ``MindSporeModule``.

Compiled functions (``ms.jit``, in PyNative and GRAPH_MODE alike): the first returns loss,
metrics, gradients of the loss times the loss scale (a tensor argument: changing it does
not recompile) and their global norm; the second multiplies the gradients by one
coefficient (unscale and clip) and applies AdamW; a third evaluates. Uncompiled (``eager``),
the first and third run in PyNative and the update stays compiled. Metrics cross
``value_and_grad`` as a tuple (GRAPH_MODE cannot return dicts there); their names are read
once from one forward pass in PyNative before the first compile. Parameters and optimizer
state are loaded in place (``copy_``): compiled functions do not see ``set_data``. Holds no
model logic and no policy."""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import ops
from mindspore.experimental.optim import AdamW

from backends.optimizer_layout import decays, update_order


class MindSporeHooks:
    """``gradients`` / ``apply`` / ``evaluate`` for ``backends.train_step.TrainStep``; float32
    master weights for a bfloat16/float16 model."""

    compiles_by_default = True

    def __init__(self, module, objective: Callable, lr: float, betas: Tuple[float, float], eps: float,
                 weight_decay: float, compiled: bool, optimizer: bool = True) -> None:
        self.module, self.objective, self.compiled = module, objective, compiled
        self.F = module.ops
        self.metric_names: Tuple[str, ...] = ()
        by_name = {p.name: p for p in module.trainable_params()}
        self.order = update_order({name: p.shape for name, p in by_name.items()})
        self.weights = [by_name[n] for n in self.order]
        self.mixed = any(p.dtype != ms.float32 for p in self.weights)
        self.master = ms.ParameterTuple([ms.Parameter(ops.cast(p, ms.float32), name="master." + p.name)
                                         for p in self.weights]) if self.mixed and optimizer else None
        targets = list(self.master) if self.master is not None else self.weights
        groups = [{"params": [t for t, p in zip(targets, self.weights) if decays(p.shape)],
                   "weight_decay": float(weight_decay)},
                  {"params": [t for t, p in zip(targets, self.weights) if not decays(p.shape)], "weight_decay": 0.0}]
        self.optimizer = AdamW([g for g in groups if g["params"]], lr=float(lr),
                               betas=tuple(float(b) for b in betas), eps=float(eps)) if optimizer else None
        self._compiled = None

    def recompile(self) -> None:
        """Compile again at the next call: host-side state that the compiled functions read
        as constants (e.g. a router's measured capacity factor) has changed."""
        self._compiled = None

    def _build(self, num_inputs: int):
        """The gradient, update and evaluation functions (closures over these hooks).
        Tensors go in as separate arguments (a tuple argument would be a compile-time
        constant and recompile every call)."""
        module, objective, F, optimizer = self.module, self.objective, self.F, self.optimizer
        names, weights, master = self.metric_names, tuple(self.weights), self.master

        def loss_fn(*tensors):
            loss, metrics = objective(F, module(*tensors[:num_inputs]), *tensors[num_inputs:])
            return loss, tuple(metrics[k] for k in names)

        def scaled_loss_fn(scale, *tensors):
            loss, metrics = loss_fn(*tensors)
            return ops.cast(loss, ms.float32) * scale, loss, metrics

        grad_fn = ms.value_and_grad(scaled_loss_fn, None, weights, has_aux=True)

        def gradients(scale, *tensors):
            (_, loss, metrics), grads = grad_fn(scale, *tensors)
            return loss, metrics, grads, F.global_norm(grads)

        def update(lr, coef, *grads):
            for rate in optimizer.lrs:
                ops.assign(rate, lr)
            done = optimizer(tuple(ops.cast(g, ms.float32) * coef for g in grads))
            if master is not None:  # the model's low-precision weights follow the float32 masters
                for weight, value in zip(weights, master):
                    ops.assign(weight, ops.cast(value, weight.dtype))
            return done

        if self.compiled:
            return ms.jit(gradients), ms.jit(update), ms.jit(loss_fn)
        return gradients, ms.jit(update), loss_fn

    def tensors(self, inputs: Sequence, targets: Sequence) -> tuple:
        """Checks the inputs (host side, before any compiled code), then numpy arrays or
        tensors -> tensors (integers int32); compiles at the first call."""
        self.module.component.check_inputs(*inputs)
        inputs = tuple(self._tensor(x) for x in inputs)
        targets = tuple(self._tensor(t) for t in targets)
        if self._compiled is None:
            self.metric_names = self._discover_metric_names(inputs, targets)
            self._compiled = self._build(len(inputs))
        return inputs + targets

    @staticmethod
    def _tensor(value):
        if isinstance(value, ms.Tensor):
            return value
        array = np.asarray(value)
        if np.issubdtype(array.dtype, np.integer):
            return ms.Tensor(array.astype(np.int32))
        return ms.Tensor(array)

    def _discover_metric_names(self, inputs, targets) -> Tuple[str, ...]:
        """One uncompiled forward pass to learn the objective's metric names; the random
        generator's state is put back afterwards, so the pass draws no numbers."""
        mode, rng = ms.get_context("mode"), ms.get_rng_state()
        ms.set_context(mode=ms.PYNATIVE_MODE)
        try:
            _, metrics = self.objective(self.F, self.module(*inputs), *targets)
        finally:
            ms.set_context(mode=mode)
            ms.set_rng_state(rng)
        return tuple(sorted(metrics))

    def _named(self, values) -> dict:
        return dict(zip(self.metric_names, values))

    def gradients(self, scale: float, num_inputs: int, tensors: tuple):
        """-> (loss, metrics, gradients of loss * scale in ``order``, their norm)."""
        self.module.set_train(True)
        loss, metrics, grads, norm = self._compiled[0](ms.Tensor(scale, ms.float32), *tensors)
        return loss, self._named(metrics), list(grads), norm

    def apply(self, grads: list, lr: float, coef: float) -> None:
        """AdamW at ``lr`` on ``grads * coef`` (compiled)."""
        self._compiled[1](ms.Tensor(lr, ms.float32), ms.Tensor(coef, ms.float32), *grads)

    def parameters(self) -> list:
        """The trainable parameters in ``order`` (a distributed optimizer reads them)."""
        return list(self.weights)

    def assign(self, values: list) -> None:
        """New values of the trainable parameters (``order``), in place: compiled functions
        do not see ``set_data``. The copy first: MindSpore 2.10's CPU InplaceCopy refuses a
        source that is a view at offset 0 of a larger buffer (it compares storage sizes)."""
        for weight, value in zip(self.weights, values):
            weight.copy_(ops.deepcopy(ops.cast(value, weight.dtype)))

    def evaluate(self, num_inputs: int, tensors: tuple):
        self.module.set_train(False)
        loss, metrics = self._compiled[2](*tensors)
        return loss, self._named(metrics)

    def master_weights(self) -> Dict[str, np.ndarray]:
        if self.master is None:
            return {}
        return {name: value.asnumpy().copy() for name, value in zip(self.order, self.master)}

    def load_master_weights(self, values: Dict[str, np.ndarray]) -> None:
        """In place: compiled functions do not see ``set_data``."""
        if self.master is not None:
            for name, value in zip(self.order, self.master):
                value.copy_(ms.Tensor(np.asarray(values[name], np.float32), ms.float32))

    def optimizer_state(self) -> Dict[str, np.ndarray]:
        out = {"step": np.asarray(int(self.optimizer.state_step.asnumpy()), np.int64)}
        for name, m, v in zip(self.order, self.optimizer.exp_avg, self.optimizer.exp_avg_sq):
            out[f"exp_avg.{name}"] = self.F.to_numpy(m).copy()
            out[f"exp_avg_sq.{name}"] = self.F.to_numpy(v).copy()
        return out

    def load_optimizer_state(self, values: Dict[str, np.ndarray]) -> None:
        """In place: compiled functions do not see ``set_data``."""
        self.optimizer.state_step.copy_(ms.Tensor(int(values["step"]), ms.int32))
        for name, m, v in zip(self.order, self.optimizer.exp_avg, self.optimizer.exp_avg_sq):
            m.copy_(ms.Tensor(np.asarray(values[f"exp_avg.{name}"], np.float32), m.dtype))
            v.copy_(ms.Tensor(np.asarray(values[f"exp_avg_sq.{name}"], np.float32), v.dtype))
