"""The PyTorch train step: a thin shell around ``torch.optim.AdamW`` that runs a
framework-free ``objective(F, module_outputs, *targets) -> (loss, metrics)`` on a
``TorchModule``, clips the global gradient norm and skips non-finite steps.
Holds no model logic."""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import torch

from backends.loss_scale import APPLY, OVERFLOW, SKIP, step_outcome
from backends.train_step import decays, mean_metrics, optimizer_state_names, split_micro_batches
from parallel.gradient_sync import GradientSync


class TorchTrainStep:
    """One AdamW step (Loshchilov & Hutter 2019, decoupled weight decay on parameters with
    two or more axes) after global-norm clipping (g <- g * min(1, clip / (||g|| + 1e-6)),
    no clipping when ``grad_clip`` is 0). A step whose loss or gradient norm is NaN/Inf
    changes nothing (weights, moments and step count) and is counted in ``skipped``.
    A bfloat16/float16 model trains with float32 master weights: gradients are cast to
    float32, clipped and applied by AdamW (float32 moments) to the masters, whose values
    are then copied into the model. With ``loss_scale`` the backward pass runs on the scaled
    loss and the float32 gradients are divided by the scale before clipping.
    With ``parallel`` (a ``launch.process_groups.ParallelRun``) gradients, their norm and the
    loss are those of the global batch (``parallel.gradient_sync``), the same on every rank."""

    def __init__(self, module, objective: Callable, lr: float, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, grad_clip: float = 0.0, parallel=None,
                 loss_scale=None) -> None:
        self.module = module
        self.loss_scale = loss_scale
        self.overflows, self.overflowed = 0, False
        self.objective = objective
        self.F = module.ops
        self.grad_clip = float(grad_clip)
        self.skipped = 0
        named = {name: p for name, p in module.params().items() if p.requires_grad}
        self.names = tuple(named)
        self.order = tuple([n for n, p in named.items() if decays(p.shape)] +
                           [n for n, p in named.items() if not decays(p.shape)])
        self.params = [named[n] for n in self.order]
        mixed = any(p.dtype != torch.float32 for p in self.params)
        self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params] if mixed else None
        self.targets = self.master or self.params
        decayed = sum(1 for n in self.order if decays(named[n].shape))
        groups = [{"params": self.targets[:decayed], "weight_decay": float(weight_decay)},
                  {"params": self.targets[decayed:], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=float(lr),
                                           betas=tuple(float(b) for b in betas), eps=float(eps))
        self.sync = None if parallel is None else GradientSync(parallel, self.order, module.specs)

    def _tensor(self, value):
        if isinstance(value, torch.Tensor):
            return value.to(self.F.device)
        array = np.asarray(value)
        if np.issubdtype(array.dtype, np.integer):
            return self.F.tensor(array.astype(np.int64))
        return self.F.tensor(array)

    def _metrics(self, metrics: dict) -> Dict[str, np.ndarray]:
        return {key: np.asarray(self.F.to_numpy(value)) for key, value in metrics.items()}

    def step(self, inputs: Sequence, targets: Sequence, lr: float,
             micro_batches: int = 1) -> Tuple[float, Dict[str, np.ndarray], float]:
        """inputs/targets: tuples of numpy arrays or tensors -> (loss, metrics, grad_norm);
        ``micro_batches``: gradient accumulation over that many slices of the batch."""
        tensors = tuple(self._tensor(x) for x in tuple(inputs) + tuple(targets))
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        scale = 1.0 if self.loss_scale is None else self.loss_scale.value
        losses, parts = [], []
        for part in split_micro_batches(tensors, micro_batches):
            loss, metrics = self.objective(self.F, self.module(*part[:len(inputs)]), *part[len(inputs):])
            scaled = loss.float() * scale if scale != 1.0 else loss
            (scaled / micro_batches if micro_batches > 1 else scaled).backward()
            losses.append(loss.detach())
            parts.append(self._metrics(metrics))
        loss = losses[0] if micro_batches == 1 else torch.stack(losses).mean()
        grads = [torch.zeros_like(t) if p.grad is None else p.grad.to(t.dtype) for p, t in zip(self.params, self.targets)]
        if scale != 1.0:
            grads = [g / scale for g in grads]
        if self.sync is None:
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        else:
            grads = self.sync.average(self.F, grads)
            norm, loss = self.sync.global_norm(self.F, grads), self.sync.batch_mean(self.F, loss.detach())
        for target, g in zip(self.targets, grads):
            target.grad = g
        loss_value, norm_value = float(loss.detach()), float(norm)
        outcome = step_outcome(self.loss_scale, loss_value, norm_value)
        if outcome == APPLY:
            if self.grad_clip > 0:
                torch.nn.utils.clip_grads_with_norm_(self.targets, self.grad_clip, norm)
            for group in self.optimizer.param_groups:
                group["lr"] = float(lr)
            self.optimizer.step()
            if self.master is not None:  # the model's low-precision weights follow the float32 masters
                with torch.no_grad():
                    for p, m in zip(self.params, self.master):
                        p.copy_(m)
        self.skipped += outcome == SKIP
        self.overflows += outcome == OVERFLOW
        self.overflowed = outcome == OVERFLOW
        self.optimizer.zero_grad(set_to_none=True)
        for p in self.params:
            p.grad = None
        return loss_value, mean_metrics(parts), norm_value

    def invalidate(self) -> None:
        """Nothing is compiled on torch (see ``MindSporeTrainStep.invalidate``)."""

    def evaluate(self, inputs: Sequence, targets: Sequence) -> Tuple[float, Dict[str, np.ndarray]]:
        """The objective without gradients or updates -> (loss, metrics)."""
        self.module.eval()
        with torch.no_grad():
            inputs = tuple(self._tensor(x) for x in inputs)
            loss, metrics = self.objective(self.F, self.module(*inputs), *(self._tensor(t) for t in targets))
        return float(loss), self._metrics(metrics)

    def master_weights(self) -> Dict[str, np.ndarray]:
        """The float32 weights AdamW updates, by parameter name: the master copies of a
        bfloat16/float16 model (what a checkpoint must keep), {} for a float32 model."""
        if self.master is None:
            return {}
        return {name: m.detach().cpu().numpy().copy() for name, m in zip(self.order, self.master)}

    def load_master_weights(self, values: Dict[str, np.ndarray]) -> None:
        """Set the master copies from float32 ``values``; nothing for a float32 model."""
        if self.master is not None:
            with torch.no_grad():
                for name, m in zip(self.order, self.master):
                    m.copy_(torch.as_tensor(np.asarray(values[name], np.float32)))

    def optimizer_state(self) -> Dict[str, np.ndarray]:
        """AdamW moments and step count as numpy copies, named as ``backends.train_step`` says."""
        step = 0
        out = {}
        for name, p in zip(self.order, self.targets):
            state = self.optimizer.state.get(p, {})
            if state:
                step = int(state["step"])
            for key in ("exp_avg", "exp_avg_sq"):
                out[f"{key}.{name}"] = (self.F.to_numpy(state[key]).copy() if state
                                        else np.zeros(tuple(p.shape), np.float32))
        out["step"] = np.asarray(step, np.int64)
        return out

    def load_optimizer_state(self, values: Dict[str, np.ndarray]) -> None:
        """Inverse of ``optimizer_state`` (accepts one written by either backend); copies, so
        training never writes into ``values``."""
        missing = sorted(set(optimizer_state_names(self.order)) - set(values))
        if missing:
            raise KeyError(f"optimizer state lacks {missing[0]}")
        state_dict = self.optimizer.state_dict()
        step = int(values["step"])
        state_dict["state"] = {}
        if step > 0:
            state_dict["state"] = {
                index: {"step": torch.tensor(float(step), dtype=torch.float32),
                        "exp_avg": torch.tensor(np.asarray(values[f"exp_avg.{name}"], np.float32)),
                        "exp_avg_sq": torch.tensor(np.asarray(values[f"exp_avg_sq.{name}"], np.float32))}
                for index, name in enumerate(self.order)}
        self.optimizer.load_state_dict(state_dict)
