"""The training loop of the one-layer toy experiments (scripts/locality_experiment.py,
capacity_experiment.py, kool_toy.py): a component on a ``backends.runtime.Runtime``, trained
by the shared train step (``backends.train_step.make_train_step``, AdamW) on batches the
experiment draws, and evaluated on held-out batches."""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from backends.runtime import Runtime
from backends.train_step import make_train_step

Batch = Tuple[tuple, tuple]  # (inputs, targets) of one step: numpy arrays
Metrics = Dict[str, np.ndarray]


class ToyLoop:
    """``component`` with ``values`` as ``runtime``'s module, trained on ``objective(F,
    outputs, *targets) -> (loss, metrics)`` at a constant ``lr``. With ``router``, the router's
    ``after_step`` gets every step's metrics and may update its non-trainable parameters (a
    change of its ``static_key``, new shapes, recompiles the step: ``TrainStep`` follows it)."""

    def __init__(self, runtime: Runtime, component, values: Dict[str, np.ndarray], objective: Callable, lr: float,
                 router=None) -> None:
        self.runtime, self.objective, self.lr, self.router = runtime, objective, lr, router
        self.module = runtime.module(component, values)
        self.step = make_train_step(runtime.backend, self.module, objective, lr=lr)

    def train(self, steps: int, draw: Callable[[Optional[Metrics]], Batch]) -> List[Metrics]:
        """``steps`` train steps, each on ``draw(the previous step's metrics, None before the
        first)``; every step's metrics."""
        history: List[Metrics] = []
        for _ in range(steps):
            inputs, targets = draw(history[-1] if history else None)
            _, metrics, _ = self.step.step(inputs, targets, self.lr)
            history.append(metrics)
            if self.router is not None:
                self._after_step(metrics)
        return history

    def evaluate(self, batches: Iterable[Batch]) -> List[Metrics]:
        """The metrics of each held-out batch (no update)."""
        return [self.step.evaluate(inputs, targets)[1] for inputs, targets in batches]

    def _after_step(self, metrics: Metrics) -> None:
        own = self.module.numpy_params(self.router.param_specs())
        self.module.update_numpy(self.router.after_step(own, metrics))
