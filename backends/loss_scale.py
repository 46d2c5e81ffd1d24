"""Loss scaling for float16 training (Micikevicius et al. 2018, "Mixed Precision Training"),
framework-free: both train steps multiply the loss by ``value`` before the backward pass
and divide the gradients by it (in float32) before clipping and AdamW, so gradients below
float16's smallest subnormal (6e-8) survive the backward pass.

Dynamic scaling: a step whose scaled gradients are not finite (float16 overflow) is skipped
and halves the scale; ``window`` finite steps in a row double it. At scale 1 a non-finite
gradient is no longer an overflow the scale can absorb: it is a bad step like any other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

APPLY, OVERFLOW, SKIP = "apply", "overflow", "skip"
INITIAL_SCALE = 2.0 ** 16
MIN_SCALE = 1.0


@dataclass
class LossScale:
    """``value``: the current scale; ``window``: finite steps in a row before it doubles
    (``dynamic``); a static scale (``dynamic=False``) never changes."""

    value: float = INITIAL_SCALE
    window: int = 2000
    dynamic: bool = True
    good_steps: int = 0

    def outcome(self, loss: float, scaled_norm: float) -> str:
        """What to do with a step (loss unscaled, gradient norm of the scaled gradients), and
        the scale's update: ``apply`` (finite), ``overflow`` (finite loss, non-finite
        gradients, dynamic scale above 1: halved, step skipped) or ``skip``."""
        if math.isfinite(loss) and math.isfinite(scaled_norm):
            self.good_steps += 1
            if self.dynamic and self.good_steps >= self.window:
                self.value, self.good_steps = self.value * 2.0, 0
            return APPLY
        self.good_steps = 0
        if math.isfinite(loss) and self.dynamic and self.value > MIN_SCALE:
            self.value = max(self.value / 2.0, MIN_SCALE)
            return OVERFLOW
        return SKIP

    def state_dict(self) -> Dict[str, float]:
        return {"value": self.value, "good_steps": self.good_steps}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.value, self.good_steps = float(state["value"]), int(state["good_steps"])


def loss_scale_for(setting: str, dtype: str, initial: float = INITIAL_SCALE,
                   window: int = 2000) -> Optional[LossScale]:
    """``train.loss_scale``: ``auto`` (dynamic for float16, none otherwise: bfloat16 has
    float32's exponent range), ``dynamic``, ``static`` (``initial`` throughout) or ``none``."""
    if setting == "none" or (setting == "auto" and dtype != "float16"):
        return None
    return LossScale(value=float(initial), window=int(window), dynamic=setting != "static")


def step_outcome(loss_scale: Optional[LossScale], loss: float, norm: float) -> str:
    """``apply`` or ``skip`` by finiteness without loss scaling, else ``LossScale.outcome``."""
    if loss_scale is None:
        return APPLY if math.isfinite(loss) and math.isfinite(norm) else SKIP
    return loss_scale.outcome(loss, norm)
