"""The PyTorch hooks of the train step (``backends.train_step`` holds the policy): gradients
of a framework-free ``objective(F, module_outputs, *targets) -> (loss, metrics)`` on a
``TorchModule`` by autograd (the loss function under ``torch.compile`` when compiled), and
an update by ``torch.optim.AdamW``. A bfloat16/float16 model trains float32 master weights:
gradients are cast to float32, AdamW (float32 moments) updates the masters, whose values
are then copied into the model. Holds no model logic and no policy."""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import torch

from backends.optimizer_layout import decayed_count, update_order


class TorchHooks:
    """``gradients`` / ``apply`` / ``evaluate`` for ``backends.train_step.TrainStep``;
    ``compiled``: the loss function runs under ``torch.compile``."""

    compiles_by_default = False  # torch.compile costs a compile per shape: opt in

    def __init__(self, module, objective: Callable, lr: float, betas: Tuple[float, float], eps: float,
                 weight_decay: float, compiled: bool, optimizer: bool = True) -> None:
        self.module, self.objective, self.compiled = module, objective, compiled
        self.F = module.ops
        named = {name: p for name, p in module.params().items() if p.requires_grad}
        self.order = update_order({name: p.shape for name, p in named.items()})
        self.params = [named[n] for n in self.order]
        self.mixed = any(p.dtype != torch.float32 for p in self.params)
        self.master = ([p.detach().float().clone().requires_grad_(True) for p in self.params]
                       if self.mixed and optimizer else None)
        self.targets = self.master or self.params
        decayed = decayed_count({name: p.shape for name, p in named.items()})
        groups = [{"params": self.targets[:decayed], "weight_decay": float(weight_decay)},
                  {"params": self.targets[decayed:], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=float(lr),
                                           betas=tuple(float(b) for b in betas), eps=float(eps)) if optimizer else None
        self._loss_fn = None

    def recompile(self) -> None:
        """Compile again at the next call (compiled-in host state changed)."""
        self._loss_fn = None

    def _loss(self, num_inputs: int):
        if self._loss_fn is None:
            def loss_fn(*tensors):
                return self.objective(self.F, self.module(*tensors[:num_inputs]), *tensors[num_inputs:])
            self._loss_fn = torch.compile(loss_fn) if self.compiled else loss_fn
        return self._loss_fn

    def tensors(self, inputs: Sequence, targets: Sequence) -> tuple:
        """numpy arrays or tensors -> tensors on the module's device (integers int64)."""
        return tuple(self._tensor(x) for x in tuple(inputs) + tuple(targets))

    def _tensor(self, value):
        if isinstance(value, torch.Tensor):
            return value.to(self.F.device)
        array = np.asarray(value)
        if np.issubdtype(array.dtype, np.integer):
            return self.F.tensor(array.astype(np.int64))
        return self.F.tensor(array)

    def gradients(self, scale: float, num_inputs: int, tensors: tuple):
        """-> (loss, metrics, gradients of loss * scale in ``order`` (the masters' dtype), their norm)."""
        self.module.train()
        for p in self.params:
            p.grad = None
        loss, metrics = self._loss(num_inputs)(*tensors)
        (loss.float() * scale if scale != 1.0 else loss).backward()
        grads = [torch.zeros_like(t) if p.grad is None else p.grad.to(t.dtype) for p, t in zip(self.params, self.targets)]
        for p in self.params:
            p.grad = None
        return loss.detach(), {key: value.detach() for key, value in metrics.items()}, grads, self.F.global_norm(grads)

    def apply(self, grads: list, lr: float, coef: float) -> None:
        """AdamW at ``lr`` on ``grads * coef``."""
        if coef != 1.0:
            torch._foreach_mul_(grads, coef)
        for target, g in zip(self.targets, grads):
            target.grad = g
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.master is not None:  # the model's low-precision weights follow the float32 masters
            with torch.no_grad():
                for p, m in zip(self.params, self.master):
                    p.copy_(m)

    def parameters(self) -> list:
        """The trainable parameters in ``order``, detached (a distributed optimizer reads them)."""
        return [p.detach() for p in self.params]

    def assign(self, values: list) -> None:
        """New values of the trainable parameters (``order``), cast to the model's dtype."""
        with torch.no_grad():
            for p, value in zip(self.params, values):
                p.copy_(value)

    def evaluate(self, num_inputs: int, tensors: tuple):
        self.module.eval()
        with torch.no_grad():
            return self._loss(num_inputs)(*tensors)

    def master_weights(self) -> Dict[str, np.ndarray]:
        if self.master is None:
            return {}
        return {name: m.detach().cpu().numpy().copy() for name, m in zip(self.order, self.master)}

    def load_master_weights(self, values: Dict[str, np.ndarray]) -> None:
        if self.master is not None:
            with torch.no_grad():
                for name, m in zip(self.order, self.master):
                    m.copy_(torch.as_tensor(np.asarray(values[name], np.float32)))

    def optimizer_state(self) -> Dict[str, np.ndarray]:
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
