"""The backend op vocabulary: the only ops that code in models/ may call.

Every backend (``torch_ops.py``, ``mindspore_ops.py``) implements exactly this set, with the
same shapes, dtypes and semantics, so an algorithm written once on ``F`` (an object with
these functions) runs on both frameworks and compiles under ``torch.compile`` and
MindSpore ``GRAPH_MODE`` / ``ms.jit``.

Conventions
- ``T`` tokens, ``d`` hidden size, ``E`` experts, ``k`` slots per token, ``N`` rows.
- Index tensors use ``F.index_dtype`` (int64 on torch, int32 on MindSpore): every op that
  returns indices returns that dtype, and every op that takes indices accepts it.
- Float ops keep their input's dtype unless they say otherwise.
- ``axis`` is always an ``int``; negative values count from the end.
- Collectives take a ``group``: an opaque handle made by ``launch.process_groups`` (a
  torch ``ProcessGroup``, a MindSpore group name). They run eagerly (counts are host ints),
  never inside a compiled MindSpore graph.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence, Tuple

Tensor = Any
DType = Any


class Ops(Protocol):
    """The op vocabulary. Shapes are given in each docstring."""

    name: str
    float32: DType
    float16: DType
    bfloat16: DType
    int32: DType
    index_dtype: DType
    bool_: DType

    # creation and conversion
    def tensor(self, array: Any, dtype: DType | None = None) -> Tensor:
        """Host array (numpy or nested lists) -> tensor on the backend's device."""

    def zeros(self, shape: Sequence[int], dtype: DType) -> Tensor: ...

    def ones(self, shape: Sequence[int], dtype: DType) -> Tensor: ...

    def arange(self, n: int, dtype: DType) -> Tensor:
        """[n] = 0, 1, ..., n-1."""

    def cast(self, x: Tensor, dtype: DType) -> Tensor: ...

    def stop_gradient(self, x: Tensor) -> Tensor: ...

    def to_numpy(self, x: Tensor) -> Any:
        """Tensor -> numpy array on the host (synchronises; never inside a compiled step)."""

    # shape
    def reshape(self, x: Tensor, shape: Sequence[int]) -> Tensor: ...

    def transpose(self, x: Tensor, perm: Sequence[int]) -> Tensor: ...

    def concat(self, xs: Sequence[Tensor], axis: int) -> Tensor: ...

    def stack(self, xs: Sequence[Tensor], axis: int) -> Tensor: ...

    def expand_dims(self, x: Tensor, axis: int) -> Tensor: ...

    # elementwise
    def exp(self, x: Tensor) -> Tensor: ...

    def log(self, x: Tensor) -> Tensor: ...

    def sqrt(self, x: Tensor) -> Tensor: ...

    def rsqrt(self, x: Tensor) -> Tensor: ...

    def sin(self, x: Tensor) -> Tensor: ...

    def cos(self, x: Tensor) -> Tensor: ...

    def sigmoid(self, x: Tensor) -> Tensor: ...

    def tanh(self, x: Tensor) -> Tensor: ...

    def relu(self, x: Tensor) -> Tensor: ...

    def gelu(self, x: Tensor) -> Tensor:
        """Exact (erf) GELU."""

    def silu(self, x: Tensor) -> Tensor: ...

    def abs(self, x: Tensor) -> Tensor: ...

    def where(self, cond: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """Elementwise select; ``a``/``b`` may be tensors broadcastable to ``cond``."""

    def maximum(self, a: Tensor, b: Tensor) -> Tensor: ...

    def minimum(self, a: Tensor, b: Tensor) -> Tensor: ...

    def clip(self, x: Tensor, low: float, high: float) -> Tensor: ...

    # random (framework RNG: differs between backends; parity tests pass noise in instead)
    def uniform(self, shape: Sequence[int], dtype: DType) -> Tensor:
        """U[0, 1) samples."""

    # reductions
    def sum(self, x: Tensor, axis: int | None = None, keepdims: bool = False) -> Tensor: ...

    def mean(self, x: Tensor, axis: int | None = None, keepdims: bool = False) -> Tensor: ...

    def max(self, x: Tensor, axis: int | None = None, keepdims: bool = False) -> Tensor:
        """Values only."""

    def global_norm(self, xs: Sequence[Tensor]) -> Tensor:
        """sqrt(sum over the tensors of the sum of their squared elements), computed in
        float32 -> a float32 scalar (0 for no tensors)."""

    def logsumexp(self, x: Tensor, axis: int) -> Tensor: ...

    def softmax(self, x: Tensor, axis: int) -> Tensor: ...

    def log_softmax(self, x: Tensor, axis: int) -> Tensor: ...

    def cumsum(self, x: Tensor, axis: int) -> Tensor:
        """Inclusive prefix sum; integer inputs stay integer."""

    # indexing
    def topk(self, x: Tensor, k: int) -> Tuple[Tensor, Tensor]:
        """Largest ``k`` along the last axis: (values [..., k], indices [..., k] index_dtype),
        sorted descending. The order among equal values is the kernel's (not
        guaranteed to favour the lower index on either backend)."""

    def argsort(self, x: Tensor, descending: bool = False) -> Tensor:
        """Stable argsort along the last axis -> index_dtype."""

    def one_hot(self, index: Tensor, depth: int, dtype: DType) -> Tensor:
        """index [...] -> [..., depth]."""

    def gather_rows(self, x: Tensor, index: Tensor) -> Tensor:
        """x [N, ...], index [M] -> [M, ...] (rows of x)."""

    def take_along_axis(self, x: Tensor, index: Tensor, axis: int) -> Tensor:
        """numpy.take_along_axis."""

    def index_add(self, target: Tensor, index: Tensor, source: Tensor) -> Tensor:
        """Out-of-place: target [N, ...] with source [M, ...] rows added at rows index [M]."""

    def write_index(self, x: Tensor, index: Tensor, update: Tensor, axis: int) -> Tensor:
        """Out-of-place: x with its slice at ``index`` (a 0-d index tensor, so compiled code
        serves every index) along ``axis`` replaced by ``update`` (x's shape, 1 on ``axis``)."""

    def linear_sum_assignment(self, cost: Tensor) -> Tensor:
        """Minimum-cost assignment of rows to distinct columns, per matrix: cost [..., N, M]
        float32 (N <= M) -> [..., N] index_dtype, the column of each row; no gradient. Solved
        on the host by ``scipy.optimize.linear_sum_assignment`` (synchronises): eagerly on
        both frameworks, and inside compiled MindSpore graphs on CPU only (a pyfunc op)."""

    # matrix products
    def matmul(self, a: Tensor, b: Tensor) -> Tensor:
        """[..., n, m] @ [..., m, p] with broadcasting over leading axes."""

    def bmm(self, a: Tensor, b: Tensor) -> Tensor:
        """[B, n, m] @ [B, m, p] -> [B, n, p]."""

    def linear(self, x: Tensor, w: Tensor) -> Tensor:
        """x [..., m] @ w.T with w [p, m] stored [out, in] (HF/torch layout) -> [..., p]."""

    def grouped_matmul(self, x: Tensor, w: Tensor, group_sizes: Tensor) -> Tensor:
        """Rows of x sorted by group: x [N, m], w [G, m, p], group_sizes [G] (sum <= N) ->
        [N, p]; rows [start_g, start_g + size_g) are multiplied by w[g]; rows past
        sum(group_sizes) give zeros and cost nothing."""

    # collectives (multi-process runs): ``group`` is a group handle of ``core.layout.ParallelRun``
    # (the world's included); None is refused (``check_group``): frameworks read it as the world
    def all_reduce(self, x: Tensor, group: Any) -> Tensor:
        """Elementwise sum of ``x`` over the group's ranks, on every rank; no gradient."""

    def all_gather(self, x: Tensor, group: Any) -> Tensor:
        """x [N, ...] of every rank of the group, concatenated in rank order -> [G*N, ...];
        no gradient."""

    def reduce_scatter(self, x: Tensor, group: Any) -> Tensor:
        """x [G*N, ...] summed over the group's G ranks; rank j of the group gets block j
        [N, ...] of the sum; no gradient."""

    def all_to_all(self, x: Tensor, send_counts: Sequence[int], recv_counts: Sequence[int],
                   group: Any) -> Tensor:
        """Rows to and from every rank of the group (uneven splits, zeros allowed): the
        first sum(send_counts) rows of x [N, m] hold, in rank order, ``send_counts[j]`` rows
        for rank j (rows past them are not sent; their gradient is zero); returns
        [sum(recv_counts), m]: ``recv_counts[j]`` rows from rank j, in rank order. Counts are
        host ints. Differentiable: the gradient is the reverse all-to-all, and every rank
        takes part in it even when it sends nothing (x keeps its gradient path)."""

    def all_to_all_equal(self, x: Tensor, group: Any) -> Tensor:
        """Equal splits (fixed buffers: every rank of the group calls it with the same R):
        x [G R, m], block j the R rows for rank j -> [G R, m], block j the R rows from rank
        j. Static shapes, no host read: compiles inside a MindSpore GRAPH_MODE / ``ms.jit``
        step. Differentiable (the gradient is the reverse exchange)."""


def check_group(op: str, group: Any) -> None:
    """Every collective names its group: torch and MindSpore read ``group=None`` as the whole
    world, which silently sums over ranks that a sub-group's reduction must leave out."""
    if group is None:
        raise ValueError(f"F.{op}: group=None (the whole world) is refused; pass the group handle "
                         f"(core.layout.ParallelRun.groups, e.g. groups['world'])")
