"""Settings, weights, inputs and the timer shared by every benchmark case (framework-free)."""
from __future__ import annotations

import functools
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

PEERS = ("hf-eager", "hf-grouped_mm", "deepspeed", "st-moe", "fairscale")


@dataclass(frozen=True)
class BenchSettings:
    """One benchmark run: the MoE layer's sizes and the timing protocol."""

    d_model: int = 512
    ffn_hidden: int = 2048
    num_experts: int = 8
    top_k: int = 2
    tokens: int = 4096
    capacity_factor: float = 1.25
    warmup: int = 2
    repeats: int = 5
    seed: int = 0
    device: str = "cpu"  # torch cases: cpu or cuda
    dtype: str = "float32"  # torch cases: float32 or bfloat16 (router weights stay float32)

    def moe_config(self, dispatch: str):
        """Our layer's config (top-k softmax router, SwiGLU experts, renormalised weights)."""
        from models.moe_config import MoEConfig
        return MoEConfig(d_model=self.d_model, ffn_hidden=self.ffn_hidden, num_experts=self.num_experts,
                         top_k=self.top_k, router="topk", expert_type="swiglu", dispatch=dispatch,
                         capacity_factor=self.capacity_factor)

    def capacity(self) -> int:
        """Slots per expert in capacity mode: ceil(cf * T * k / E) (same as MoEConfig.capacity)."""
        return self.moe_config("capacity").capacity(self.tokens)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


@functools.lru_cache(maxsize=1)
def layer_weights(settings: BenchSettings) -> Dict[str, np.ndarray]:
    """Our layer's initial weights (router.weight [d, E]; experts.w_gate, w_up [E, d, f],
    experts.w_down [E, f, d]); every case that can loads these (copies: never write into
    them), so routing and outputs can be compared across implementations. Made once per
    settings: at 64 experts of d=1024, ffn=704 numpy takes seconds."""
    from core.params import init_params
    from models.moe_layer import MoELayer
    return init_params(MoELayer(settings.moe_config("dropless")).param_specs(), settings.seed)


def dense_weights(settings: BenchSettings) -> Dict[str, np.ndarray]:
    """The dense reference FFN: SwiGLU with hidden f * k (the MoE's active FLOPs per token)."""
    rng = np.random.default_rng(settings.seed + 1)
    d, h = settings.d_model, settings.ffn_hidden * settings.top_k
    shapes = {"w_gate": (d, h), "w_up": (d, h), "w_down": (h, d)}
    return {name: (rng.standard_normal(shape) * 0.02).astype(np.float32) for name, shape in shapes.items()}


def inputs(settings: BenchSettings):
    """x [T, d] and the output cotangent [T, d]: loss = sum(y * cotangent) + aux loss."""
    rng = np.random.default_rng(settings.seed + 2)
    shape = (settings.tokens, settings.d_model)
    return rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)


def as_numpy(y: Any) -> np.ndarray:
    """A case's output as float32 numpy: numpy as it is, a framework tensor (any device,
    any dtype) through ``float().cpu().numpy()``."""
    return y if isinstance(y, np.ndarray) else y.detach().float().cpu().numpy()


@dataclass
class Case:
    """One implementation to time. ``step`` runs one synchronised forward+backward and
    returns y [T, d] (numpy, or a tensor ``as_numpy`` converts; the first one is kept, to
    check that an implementation that routes like our ``compare_to`` case computes the same
    output)."""

    name: str
    group: str
    dispatch: str
    step: Optional[Callable[[], np.ndarray]] = None
    compare_to: Optional[str] = None
    note: str = ""
    error: str = ""


def error_text(error: BaseException) -> str:
    if isinstance(error, ImportError):
        return f"not installed ({error})"
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"


def prepare(name: str, group: str, dispatch: str, build: Callable[[], Case]) -> Case:
    """Build one case; an import failure or a crash becomes a case with ``error`` (a peer's
    own failure is a result to report, and the other cases go on)."""
    try:
        return build()
    except Exception as error:
        return Case(name, group, dispatch, error=error_text(error))


def time_round_robin(cases: Sequence[Case], settings: BenchSettings) -> List[Dict[str, Any]]:
    """Warm every case up, then ``repeats`` rounds in which each case runs one timed step in
    turn: a shared machine's slow drift then hits every case alike, so the ratios between
    cases of one process hold even when the absolute times wander."""
    first: Dict[str, np.ndarray] = {}
    times: Dict[str, List[float]] = {c.name: [] for c in cases}

    def attempt(c: Case, record: bool) -> None:
        if c.error:
            return
        try:
            start = time.perf_counter()
            y = c.step()
            if record:
                times[c.name].append((time.perf_counter() - start) * 1e3)
            first.setdefault(c.name, y)
        except Exception as error:
            c.error = error_text(error)

    for c in cases:
        for _ in range(settings.warmup):
            attempt(c, record=False)
    for _ in range(settings.repeats):
        for c in cases:
            attempt(c, record=True)
    rows = []
    for c in cases:
        row = {"name": c.name, "group": c.group, "dispatch": c.dispatch, "note": c.note, "error": c.error,
               "compare_to": c.compare_to, "y": None if c.error or c.name not in first else as_numpy(first[c.name])}
        if not c.error:
            ms = times[c.name]
            row.update({"median_ms": statistics.median(ms), "min_ms": min(ms), "times_ms": ms})
        rows.append(row)
    return rows
