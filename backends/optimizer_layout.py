"""How AdamW sees a module's trainable parameters, framework-free: which of them decay,
the order both frameworks update them in, and the backend-neutral names of the optimizer
state, so that a checkpoint written by one framework loads into the other."""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple


def decays(shape: Sequence[int]) -> bool:
    """Weight decay applies to matrices and expert stacks (two or more axes), not to
    norm gains or biases."""
    return len(tuple(shape)) >= 2


def update_order(shapes: Dict[str, Sequence[int]]) -> Tuple[str, ...]:
    """Trainable parameter names (in the module's order) -> the optimizer's order: the
    decayed parameters first, then the others, each group in the module's order."""
    return tuple([n for n, s in shapes.items() if decays(s)] + [n for n, s in shapes.items() if not decays(s)])


def decayed_count(shapes: Dict[str, Sequence[int]]) -> int:
    """How many of the parameters lead ``update_order`` as the decayed group."""
    return sum(1 for s in shapes.values() if decays(s))


def optimizer_state_names(param_names: Iterable[str]) -> List[str]:
    """``step`` plus ``exp_avg.<param>`` and ``exp_avg_sq.<param>`` for every trainable
    parameter (names as in the component's ``param_specs``)."""
    names = ["step"]
    for name in param_names:
        names += [f"exp_avg.{name}", f"exp_avg_sq.{name}"]
    return names
