"""The op vocabulary (backends/vocabulary.py) on MindSpore: CPU here, Ascend and GPU by device.

Uses ``mindspore.ops`` (not ``mint``): ``mint`` has no CPU kernels for topk, cumsum and
index_add. Every function here also compiles under GRAPH_MODE and ``ms.jit``.
"""
from __future__ import annotations

from typing import Any, Sequence

import mindspore as ms
import numpy as np
from mindspore import ops
from scipy import optimize

from backends.mindspore_collectives import RowExchange, all_gather, collective, exchange_equal_rows
from backends.mindspore_grouped_matmul import grouped_matmul_kernel
from backends.vocabulary import check_group


def _solve_assignments(cost: np.ndarray) -> np.ndarray:
    """Host kernel of ``linear_sum_assignment``: [..., N, M] -> [..., N] int32."""
    flat = cost.reshape((-1,) + cost.shape[-2:])
    columns = np.stack([optimize.linear_sum_assignment(m)[1] for m in flat])
    return columns.reshape(cost.shape[:-1]).astype(np.int32)


def _rows_shape(cost_shape):
    return tuple(cost_shape[:-1])


def _int32(cost_dtype):
    return ms.int32


# Created once at import: MindSpore cannot build a Custom op inside compiled code. pyfunc
# ops run a Python function on the host, in PyNative and in graphs; CPU only.
_ASSIGNMENT = ops.Custom(_solve_assignments, out_shape=_rows_shape, out_dtype=_int32, func_type="pyfunc")


_MATMUL_TRANSPOSE_B = ops.MatMul(transpose_b=True)


class MindSporeOps:
    """Implements ``backends.vocabulary.Ops`` with MindSpore."""

    name = "mindspore"
    float32 = ms.float32
    float16 = ms.float16
    bfloat16 = ms.bfloat16
    int32 = ms.int32
    index_dtype = ms.int32
    bool_ = ms.bool_

    def __init__(self) -> None:
        """Device kernels are chosen here, once (compiled code cannot read the context)."""
        self.on_ascend = ms.get_context("device_target") == "Ascend"

    # creation and conversion
    def tensor(self, array: Any, dtype=None):
        return ms.Tensor(np.asarray(array), dtype=dtype)

    def zeros(self, shape: Sequence[int], dtype):
        return ops.zeros(tuple(shape), dtype)

    def ones(self, shape: Sequence[int], dtype):
        return ops.ones(tuple(shape), dtype)

    def arange(self, n: int, dtype):
        return ops.arange(0, n, 1, dtype=dtype)

    def cast(self, x, dtype):
        return ops.cast(x, dtype)

    def stop_gradient(self, x):
        return ops.stop_gradient(x)

    def to_numpy(self, x):
        if x.dtype == ms.bfloat16:
            x = ops.cast(x, ms.float32)
        return x.asnumpy()

    # shape
    def reshape(self, x, shape):
        return ops.reshape(x, tuple(shape))

    def transpose(self, x, perm):
        return ops.transpose(x, tuple(perm))

    def concat(self, xs, axis: int):
        return ops.concat(tuple(xs), axis)

    def stack(self, xs, axis: int):
        return ops.stack(tuple(xs), axis)

    def expand_dims(self, x, axis: int):
        return ops.expand_dims(x, axis)

    # elementwise
    def exp(self, x):
        return ops.exp(x)

    def log(self, x):
        return ops.log(x)

    def sqrt(self, x):
        return ops.sqrt(x)

    def rsqrt(self, x):
        return ops.rsqrt(x)

    def sin(self, x):
        return ops.sin(x)

    def cos(self, x):
        return ops.cos(x)

    def sigmoid(self, x):
        return ops.sigmoid(x)

    def tanh(self, x):
        return ops.tanh(x)

    def relu(self, x):
        return ops.relu(x)

    def gelu(self, x):
        return ops.gelu(x, approximate="none")

    def silu(self, x):
        return ops.silu(x)

    def abs(self, x):
        return ops.abs(x)

    def where(self, cond, a, b):
        return ops.where(cond, a, b)

    def maximum(self, a, b):
        return ops.maximum(a, b)

    def minimum(self, a, b):
        return ops.minimum(a, b)

    def clip(self, x, low: float, high: float):
        return ops.clamp(x, low, high)

    def uniform(self, shape, dtype):
        return ops.rand(tuple(shape), dtype=dtype)

    # reductions
    def sum(self, x, axis=None, keepdims: bool = False):
        return x.sum() if axis is None else x.sum(axis, keepdims)

    def mean(self, x, axis=None, keepdims: bool = False):
        return x.mean() if axis is None else x.mean(axis, keepdims)

    def max(self, x, axis=None, keepdims: bool = False):
        return ops.amax(x) if axis is None else ops.amax(x, axis, keepdims)

    def global_norm(self, xs):
        total = ops.zeros((), ms.float32)
        for x in xs:
            x32 = ops.cast(x, ms.float32)
            total = total + ops.sum(x32 * x32)
        return ops.sqrt(total)

    def logsumexp(self, x, axis: int):
        return ops.logsumexp(x, axis)

    def softmax(self, x, axis: int):
        return ops.softmax(x, axis)

    def log_softmax(self, x, axis: int):
        return ops.log_softmax(x, axis)

    def cumsum(self, x, axis: int):
        return ops.cumsum(x, axis)

    # indexing
    def topk(self, x, k: int):
        return ops.topk(x, k)

    def argsort(self, x, descending: bool = False):
        """Stable for integer keys (each key is made unique by its position first); float
        keys are sorted by value and equal floats are left in the kernel's order."""
        n = x.shape[-1]
        if x.dtype in (ms.int32, ms.int64):
            position = ops.arange(0, n, 1, dtype=ms.int64)
            key = ops.cast(x, ms.int64) * n
            key = key - position if descending else key + position
            return ops.cast(ops.sort(key, -1, descending)[1], ms.int32)
        return ops.cast(ops.sort(x, -1, descending)[1], ms.int32)

    def one_hot(self, index, depth: int, dtype):
        on = ops.ones((), dtype)
        off = ops.zeros((), dtype)
        return ops.one_hot(ops.cast(index, ms.int32), depth, on, off)

    def gather_rows(self, x, index):
        return ops.gather(x, index, 0)

    def take_along_axis(self, x, index, axis: int):
        return ops.gather_elements(x, axis, index)

    def index_add(self, target, index, source):
        """``target`` plus a segment sum. Not ``ops.index_add``: it writes into its input,
        and GRAPH_MODE merges equal constants, so under value_and_grad every index_add onto
        ``zeros`` of one shape shared a buffer (measured: wrong losses for two stacked MoE
        layers, and for two index_adds in one router)."""
        return target + ops.unsorted_segment_sum(source, ops.cast(index, ms.int32), target.shape[0])

    def write_index(self, x, index, update, axis: int):
        """A select on the position mask: one kernel, and it compiles with a tensor index."""
        rank, length = len(x.shape), x.shape[axis]
        axis = axis % rank
        mask = ops.arange(0, length, 1, dtype=ms.int32) == ops.cast(index, ms.int32)
        return ops.where(ops.reshape(mask, (1,) * axis + (length,) + (1,) * (rank - axis - 1)), update, x)

    def linear_sum_assignment(self, cost):
        return _ASSIGNMENT(ops.stop_gradient(ops.cast(cost, ms.float32)))

    # matrix products
    def matmul(self, a, b):
        return ops.matmul(a, b)

    def bmm(self, a, b):
        return ops.bmm(a, b)

    def linear(self, x, w):
        """One 2-D ``MatMul(transpose_b)`` over the flattened leading axes: a broadcast
        BatchMatMul (what ``ops.matmul`` gives for 3-D x) needs a ReduceSum for the weight
        gradient and measured slower on CPU, and ``ops.dense`` slower still."""
        shape = x.shape
        y = _MATMUL_TRANSPOSE_B(ops.reshape(x, (-1, shape[-1])), w)
        return ops.reshape(y, shape[:-1] + (w.shape[0],))

    def grouped_matmul(self, x, w, group_sizes):
        """On Ascend (float16, float32) MindSpore's fused ``GroupedMatmul``
        (``_AscendGroupedMatmul``); elsewhere one matmul per group on row slices with tensor
        bounds (dynamic shapes, which GRAPH_MODE supports): the group count is static, the
        sizes need no host sync, and ``_GroupedMatmul`` gives it its own backward."""
        ascend = self.on_ascend and x.dtype in (ms.float16, ms.float32)
        return grouped_matmul_kernel("ascend" if ascend else "portable")(x, w, group_sizes)

    # collectives (mindspore.communication: HCCL on Ascend, NCCL on GPU, mccl on CPU)
    def all_reduce(self, x, group):
        check_group("all_reduce", group)
        return ops.stop_gradient(ops.AllReduce(group=group)(x))  # made here: compiled code cannot fill a cache

    def all_gather(self, x, group):
        check_group("all_gather", group)
        return ops.stop_gradient(all_gather(x, group))

    def reduce_scatter(self, x, group):
        """ReduceScatter; mccl (CPU) has none: an AllReduce, then this rank's block."""
        check_group("reduce_scatter", group)
        if ms.get_context("device_target") != "CPU":
            return ops.stop_gradient(collective(ops.ReduceScatter, group)(x))
        from mindspore.communication import get_group_size, get_rank
        block = x.shape[0] // get_group_size(group)
        start = get_rank(group) * block
        return ops.stop_gradient(collective(ops.AllReduce, group)(x))[start:start + block]

    def all_to_all(self, x, send_counts, recv_counts, group):
        check_group("all_to_all", group)
        return RowExchange(tuple(int(c) for c in send_counts), tuple(int(c) for c in recv_counts), group)(x)

    def all_to_all_equal(self, x, group):
        check_group("all_to_all_equal", group)
        return exchange_equal_rows(x, group)
