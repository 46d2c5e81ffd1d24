"""The op vocabulary (backends/vocabulary.py) on MindSpore: CPU here, Ascend and GPU by device.

Uses ``mindspore.ops`` (not ``mint``): ``mint`` has no CPU kernels for topk, cumsum and
index_add. Every function here also compiles under GRAPH_MODE and ``ms.jit``.
"""
from __future__ import annotations

from typing import Any, Sequence

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from scipy import optimize


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
        return ops.stop_gradient(_collective(ops.AllReduce, group)(x))

    def all_gather(self, x, group):
        return ops.stop_gradient(_all_gather(x, group))

    def all_to_all(self, x, send_counts, recv_counts, group):
        return _RowExchange(tuple(int(c) for c in send_counts), tuple(int(c) for c in recv_counts), group)(x)


_COLLECTIVES: dict = {}


def _collective(kind, group: str, **options):
    """One primitive per (kind, group, options), made at first use."""
    key = (kind.__name__, group, tuple(sorted(options.items())))
    if key not in _COLLECTIVES:
        _COLLECTIVES[key] = kind(group=group, **options)
    return _COLLECTIVES[key]


def _all_gather(x, group: str):
    """AllGather; on MindSpore's CPU backend, whose AllGather takes only the world group, a
    sub-group's gather is an AllReduce (float32, exact for counts below 2^24) of a zero
    buffer holding x in this rank's block."""
    from mindspore.communication import GlobalComm, get_group_size, get_rank
    if ms.get_context("device_target") != "CPU" or group == GlobalComm.WORLD_COMM_GROUP:
        return _collective(ops.AllGather, group)(x)
    size, me = get_group_size(group), get_rank(group)
    own_block = ms.Tensor(np.eye(size, dtype=np.float32)[me].reshape((size,) + (1,) * x.ndim))
    total = _collective(ops.AllReduce, group)(ops.expand_dims(ops.cast(x, ms.float32), 0) * own_block)
    return ops.cast(ops.reshape(total, (size * x.shape[0],) + tuple(x.shape[1:])), x.dtype)  # CPU AllReduce: floats


def exchange_rows(x, send_counts, recv_counts, group: str):
    """x [sum(send), m] -> [sum(recv), m]: ``AlltoAllV`` where the device has it (Ascend, GPU),
    else ``all_to_all_stand_in``."""
    width = x.shape[1]
    if ms.get_context("device_target") == "CPU":
        return all_to_all_stand_in(x, send_counts, recv_counts, group)
    exchange = _collective(ops.AlltoAllV, group, block_size=width)
    flat = exchange(ops.reshape(x, (-1,)), list(send_counts), list(recv_counts))
    if sum(recv_counts) == 0:  # AlltoAllV returns a 0-d tensor for an empty receive
        return ops.zeros((0, width), x.dtype)
    return ops.reshape(flat, (sum(recv_counts), width))


def all_to_all_stand_in(x, send_counts, recv_counts, group: str):
    """A stand-in for all-to-all on MindSpore's CPU backend, which has none (AllReduce on any
    group, AllGather on the world group only): the count matrix is all-gathered, every rank writes its
    rows into its own [G, R, m] block of a zero [G, G, R, m] buffer (R = the largest count
    any rank sends any rank), AllReduce sums the buffers, and each rank reads the rows sent
    to it. It moves G^2 R m values instead of the rows themselves: for tests on CPU only,
    never on the Ascend or GPU path."""
    from mindspore.communication import get_group_size, get_rank
    size, me = get_group_size(group), get_rank(group)
    width = x.shape[1]
    counts = _all_gather(ms.Tensor(np.asarray(send_counts, np.int32)), group).asnumpy()
    rows = max(int(counts.max()), 1)
    place = np.concatenate([j * rows + np.arange(n) for j, n in enumerate(send_counts)]).astype(np.int32)
    mine = (ops.unsorted_segment_sum(x, ms.Tensor(place), size * rows) if place.size
            else ops.zeros((size * rows, width), x.dtype))
    own_block = ms.Tensor(np.eye(size, dtype=np.float32)[me].reshape(size, 1, 1), x.dtype)
    buffer = ops.expand_dims(mine, 0) * own_block  # mine in block ``me``, zeros elsewhere (no empty slices)
    total = ops.reshape(_collective(ops.AllReduce, group)(buffer), (size * size * rows, width))
    take = np.concatenate([(j * size + me) * rows + np.arange(n) for j, n in enumerate(recv_counts)]).astype(np.int32)
    return ops.gather(total, ms.Tensor(take), 0) if take.size else ops.zeros((0, width), x.dtype)


class _RowExchange(nn.Cell):
    """All-to-all of rows whose backward is the reverse all-to-all (gradients go back to the
    rows they came from)."""

    def __init__(self, send_counts: tuple, recv_counts: tuple, group: str) -> None:
        super().__init__()
        self.send_counts, self.recv_counts, self.group = send_counts, recv_counts, group

    def construct(self, x):
        sent = sum(self.send_counts)
        rows = x if sent == x.shape[0] else x[:sent]
        return exchange_rows(rows, self.send_counts, self.recv_counts, self.group)

    def bprop(self, x, out, dout):
        back = exchange_rows(dout, self.recv_counts, self.send_counts, self.group)
        unsent = x.shape[0] - back.shape[0]
        return (back if unsent == 0 else ops.concat((back, ops.zeros((unsent, x.shape[1]), x.dtype)), 0),)


class _GroupedMatmul(nn.Cell):
    """x [N, m] sorted by group, w [G, m, p], group_sizes [G] -> [N, p] with a hand-written
    backward. Measured on CPU (d=512, f=2048, 8 groups): autograd through ``w[g]`` and the
    row slices builds a full-size zero gradient per group and adds them up, and integer
    indexing ``w[g]`` is itself a slow kernel (``Unstack`` is not); fwd+bwd 3.7x faster.
    Each group's slice starts one row early (a zero row is put before x), so no MatMul sees
    an empty input (GRAPH_MODE and ms.jit reject them; PyNative fails on the slice x[0:0]);
    that row's output is dropped. For the weight gradient every group gets a zero row of its
    own (one gather of x and of dout), so the extra row adds nothing: masking the previous
    group's row instead cost a broadcast multiply per group, measured 340 of 880 ms of the
    backward (PyNative, 8192 rows, 512 -> 2048, 8 groups)."""

    def __init__(self) -> None:
        super().__init__()
        self.cumsum = ops.CumSum()
        self.unstack = ops.Unstack(0)
        self.matmul = ops.MatMul()
        self.matmul_ta = ops.MatMul(transpose_a=True)
        self.matmul_tb = ops.MatMul(transpose_b=True)

    def bounds(self, group_sizes):
        """Slice bounds in the padded rows: [start, end) = the group's rows plus one before."""
        ends = self.cumsum(group_sizes, 0) + 1
        return ends - group_sizes - 1, ends

    def grouped(self, x, weights, group_sizes, width: int, matmul):
        starts, ends = self.bounds(group_sizes)
        padded = ops.concat((ops.zeros((1, x.shape[1]), x.dtype), x), 0)
        parts = ()
        for g in range(len(weights)):
            parts = parts + (matmul(padded[starts[g]:ends[g]], weights[g])[1:],)
        tail = ops.zeros((x.shape[0] + 1, width), x.dtype)[ends[-1]:]
        return ops.concat(parts + (tail,), 0)

    def construct(self, x, w, group_sizes):
        return self.grouped(x, self.unstack(w), group_sizes, w.shape[-1], self.matmul)

    def own_zero_rows(self, group_sizes, rows: int):
        """Gather index into [zero row; x] (rows + 1 rows) for a layout in which every group
        follows a zero row of its own: [0, group 0, 0, group 1, ...] (rows + G entries), and
        each group's slice bounds there, [lead, lead + size + 1), its zero row included."""
        num = group_sizes.shape[0]
        lead = self.cumsum(group_sizes, 0) - group_sizes + ops.arange(0, num, dtype=group_sizes.dtype)
        place = ops.arange(0, rows + num, dtype=group_sizes.dtype)
        group = ops.cast(ops.expand_dims(place, 1) >= ops.expand_dims(lead, 0), group_sizes.dtype).sum(1) - 1
        index = ops.where(place == ops.gather(lead, group, 0), ops.zeros_like(place), place - group)
        return index, lead, lead + group_sizes + 1

    def bprop(self, x, w, group_sizes, out, dout):
        weights = self.unstack(w)
        grad_x = self.grouped(dout, weights, group_sizes, x.shape[1], self.matmul_tb)
        index, starts, ends = self.own_zero_rows(group_sizes, x.shape[0])
        own_x = ops.gather(ops.concat((ops.zeros((1, x.shape[1]), x.dtype), x), 0), index, 0)
        own_dout = ops.gather(ops.concat((ops.zeros((1, dout.shape[1]), dout.dtype), dout), 0), index, 0)
        grads = ()
        for g in range(len(weights)):
            grads = grads + (self.matmul_ta(own_x[starts[g]:ends[g]], own_dout[starts[g]:ends[g]]),)
        return grad_x, ops.stack(grads, 0), ops.zeros_like(group_sizes)


class _AscendGroupedMatmul(nn.Cell):
    """MindSpore's ``GroupedMatmul`` (Ascend only) with split_item 3 and group_type 0: one x
    [N, m] split on its rows at cumulative int64 ends, one w [G, m, p]; differentiable in
    MindSpore itself in that setting (no bias, no quantisation). The ends must finish at N,
    so the last group also takes the rows past the groups, which are zeroed on the way in
    (no weight-gradient term) and on the way out."""

    def __init__(self) -> None:
        super().__init__()
        from mindspore.ops.auto_generate import GroupedMatmul
        self.grouped = GroupedMatmul(split_item=3, group_type=0)
        self.cumsum = ops.CumSum()

    def construct(self, x, w, group_sizes):
        ends = self.cumsum(ops.cast(group_sizes, ms.int64), 0)
        rows = x.shape[0]
        inside = ops.expand_dims(ops.arange(0, rows, dtype=ms.int64) < ends[-1], -1)
        ends = ops.concat((ends[:-1], ops.full((1,), rows, dtype=ms.int64)), 0)
        out = self.grouped([ops.where(inside, x, ops.zeros((), x.dtype))], [w], None, None, None, None, None, ends)[0]
        return ops.where(inside, out, ops.zeros((), out.dtype))


# Created once at import, like _ASSIGNMENT: compiled code calls them, never builds them.
_GROUPED_MATMUL_KERNELS = {"portable": _GroupedMatmul(), "ascend": _AscendGroupedMatmul()}


def grouped_matmul_kernel(name: str):
    """``portable`` (any device; the reference) or ``ascend`` (``ops.GroupedMatmul``)."""
    return _GROUPED_MATMUL_KERNELS[name]
