"""The MindSpore train step: a thin shell around ``mindspore.experimental.optim.AdamW``
(PyTorch's AdamW maths, runs on CPU, GPU and Ascend; its learning rate is a Parameter, so
changing it per step does not recompile) that runs a framework-free
``objective(F, module_outputs, *targets) -> (loss, metrics)`` on a ``MindSporeModule``.

Compiled functions (``ms.jit``, in PyNative and GRAPH_MODE alike): the first returns loss,
metrics, gradients of the loss times the loss scale (a tensor argument: changing it does
not recompile) and their global norm; the host reads loss and norm and, only when both are
finite, calls the second, which unscales, clips and applies AdamW; a third evaluates.
Metrics cross ``value_and_grad`` as a tuple (GRAPH_MODE cannot return dicts there); their
names are read once from one forward pass in PyNative before the first compile.
Parameters and optimizer state are loaded in place (``copy_``): compiled functions do not
see ``set_data``. Holds no model logic."""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import ops
from mindspore.experimental.optim import AdamW

from backends.loss_scale import APPLY, OVERFLOW, SKIP, step_outcome
from backends.train_step import decays, mean_metrics, optimizer_state_names, split_micro_batches
from parallel.gradient_sync import GradientSync


def global_norm(grads):
    """sqrt(sum_i ||g_i||^2) in float32 over a tuple of gradients."""
    total = ops.zeros((), ms.float32)
    for g in grads:
        g32 = ops.cast(g, ms.float32)
        total = total + ops.sum(g32 * g32)
    return ops.sqrt(total)


class MindSporeTrainStep:
    """Same contract as ``backends.torch_train.TorchTrainStep`` (see backends/train_step.py),
    float32 master weights for a bfloat16/float16 model included.
    ``jit=False`` runs the step uncompiled (PyNative) for debugging. In a multi-process run
    (``parallel``) gradients are averaged between the gradient function and the compiled
    update; with expert parallelism the forward and backward run uncompiled (the all-to-all
    reads its split sizes on the host), with data parallelism alone they stay compiled."""

    def __init__(self, module, objective: Callable, lr: float, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, grad_clip: float = 0.0, jit: bool = True,
                 parallel=None, loss_scale=None) -> None:
        self.module = module
        self.loss_scale = loss_scale
        self.overflows, self.overflowed = 0, False
        self.objective = objective
        self.F = module.ops
        self.grad_clip = float(grad_clip)
        self.skipped = 0
        self.metric_names: Tuple[str, ...] = ()
        weights = list(module.trainable_params())
        self.weights = [p for p in weights if decays(p.shape)] + [p for p in weights if not decays(p.shape)]
        self.order = tuple(p.name for p in self.weights)
        mixed = any(p.dtype != ms.float32 for p in self.weights)
        self.master = ms.ParameterTuple([ms.Parameter(ops.cast(p, ms.float32), name="master." + p.name)
                                         for p in self.weights]) if mixed else None
        targets = list(self.master) if mixed else self.weights
        groups = [{"params": [t for t, p in zip(targets, self.weights) if decays(p.shape)],
                   "weight_decay": float(weight_decay)},
                  {"params": [t for t, p in zip(targets, self.weights) if not decays(p.shape)], "weight_decay": 0.0}]
        self.optimizer = AdamW([g for g in groups if g["params"]], lr=float(lr),
                               betas=tuple(float(b) for b in betas), eps=float(eps))
        self.sync = None if parallel is None else GradientSync(parallel, self.order, module.specs)
        self.jit = jit and (parallel is None or core.layout.expert_parallel == 1)
        self._compiled = None

    def _build(self, num_inputs: int):
        """The compiled gradient, update and evaluation functions (closures over this step).
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
            return loss, metrics, grads, global_norm(grads)

        def update(lr, scale, *grads):
            for rate in optimizer.lrs:
                ops.assign(rate, lr)
            done = optimizer(tuple(ops.cast(g, ms.float32) * scale for g in grads))
            if master is not None:  # the model's low-precision weights follow the float32 masters
                for weight, value in zip(weights, master):
                    ops.assign(weight, ops.cast(value, weight.dtype))
            return done

        if self.jit:
            return ms.jit(gradients), ms.jit(update), ms.jit(loss_fn)
        return gradients, ms.jit(update), loss_fn

    def _tensor(self, value):
        if isinstance(value, ms.Tensor):
            return value
        array = np.asarray(value)
        if np.issubdtype(array.dtype, np.integer):
            return ms.Tensor(array.astype(np.int32))
        return ms.Tensor(array)

    def _prepare(self, inputs: Sequence, targets: Sequence):
        self.module.component.check_inputs(*inputs)
        inputs = tuple(self._tensor(x) for x in inputs)
        targets = tuple(self._tensor(t) for t in targets)
        if self._compiled is None:
            self.metric_names = self._discover_metric_names(inputs, targets)
            self._compiled = self._build(len(inputs))
        return inputs + targets

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

    def _metrics(self, values) -> Dict[str, np.ndarray]:
        return {key: np.asarray(self.F.to_numpy(value)) for key, value in zip(self.metric_names, values)}

    def step(self, inputs: Sequence, targets: Sequence, lr: float,
             micro_batches: int = 1) -> Tuple[float, Dict[str, np.ndarray], float]:
        """inputs/targets: tuples of numpy arrays or tensors -> (loss, metrics, grad_norm);
        ``micro_batches``: gradient accumulation over that many slices of the batch (the
        compiled gradient function runs once per slice)."""
        tensors = self._prepare(inputs, targets)
        gradients, update, _ = self._compiled
        self.module.set_train(True)
        loss_scale = 1.0 if self.loss_scale is None else self.loss_scale.value
        scale = ms.Tensor(loss_scale, ms.float32)
        losses, parts, total = [], [], None
        for part in split_micro_batches(tensors, micro_batches):
            loss, metrics, grads, norm = gradients(scale, *part)
            total = grads if total is None else tuple(a + b for a, b in zip(total, grads))
            losses.append(loss)
            parts.append(self._metrics(metrics))
        if micro_batches > 1:
            grads = tuple(g / micro_batches for g in total)
            loss, norm = sum(losses) / micro_batches, global_norm(grads)
        if self.sync is not None:
            grads = tuple(self.sync.average(self.F, grads))
            norm, loss = self.sync.global_norm(self.F, grads), self.sync.batch_mean(self.F, loss)
        loss_value, norm_value = float(loss.asnumpy()), float(norm.asnumpy()) / loss_scale
        outcome = step_outcome(self.loss_scale, loss_value, norm_value)
        if outcome == APPLY:
            clip = min(1.0, self.grad_clip / (norm_value + 1e-6)) if self.grad_clip > 0 else 1.0
            update(ms.Tensor(float(lr), ms.float32), ms.Tensor(clip / loss_scale, ms.float32), *grads)
        self.skipped += outcome == SKIP
        self.overflows += outcome == OVERFLOW
        self.overflowed = outcome == OVERFLOW
        return loss_value, mean_metrics(parts), norm_value

    def invalidate(self) -> None:
        """Compile again at the next call: host-side state that the compiled functions read
        as constants (e.g. a router's measured capacity factor) has changed."""
        self._compiled = None

    def evaluate(self, inputs: Sequence, targets: Sequence) -> Tuple[float, Dict[str, np.ndarray]]:
        """The objective without gradients or updates -> (loss, metrics)."""
        tensors = self._prepare(inputs, targets)
        self.module.set_train(False)
        loss, metrics = self._compiled[2](*tensors)
        return float(loss.asnumpy()), self._metrics(metrics)

    def master_weights(self) -> Dict[str, np.ndarray]:
        """The float32 weights AdamW updates, by parameter name: the master copies of a
        bfloat16/float16 model (what a checkpoint must keep), {} for a float32 model."""
        if self.master is None:
            return {}
        return {name: value.asnumpy().copy() for name, value in zip(self.order, self.master)}

    def load_master_weights(self, values: Dict[str, np.ndarray]) -> None:
        """Set the master copies (in place) from float32 ``values``; nothing for float32."""
        if self.master is not None:
            for name, value in zip(self.order, self.master):
                value.copy_(ms.Tensor(np.asarray(values[name], np.float32), ms.float32))

    def optimizer_state(self) -> Dict[str, np.ndarray]:
        """AdamW moments and step count as numpy copies, named as ``backends.train_step`` says."""
        out = {"step": np.asarray(int(self.optimizer.state_step.asnumpy()), np.int64)}
        for name, m, v in zip(self.order, self.optimizer.exp_avg, self.optimizer.exp_avg_sq):
            out[f"exp_avg.{name}"] = self.F.to_numpy(m).copy()
            out[f"exp_avg_sq.{name}"] = self.F.to_numpy(v).copy()
        return out

    def load_optimizer_state(self, values: Dict[str, np.ndarray]) -> None:
        """Inverse of ``optimizer_state`` (accepts one written by either backend). Copies in
        place: compiled functions do not see ``set_data``."""
        missing = sorted(set(optimizer_state_names(self.order)) - set(values))
        if missing:
            raise KeyError(f"optimizer state lacks {missing[0]}")
        self.optimizer.state_step.copy_(ms.Tensor(int(values["step"]), ms.int32))
        for name, m, v in zip(self.order, self.optimizer.exp_avg, self.optimizer.exp_avg_sq):
            m.copy_(ms.Tensor(np.asarray(values[f"exp_avg.{name}"], np.float32), m.dtype))
            v.copy_(ms.Tensor(np.asarray(values[f"exp_avg_sq.{name}"], np.float32), v.dtype))
