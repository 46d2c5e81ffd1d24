"""MindSpore's collectives behind the vocabulary's all_reduce, all_gather and all_to_all
(``mindspore.communication``: HCCL on Ascend, NCCL on GPU, mccl on CPU). mccl has AllReduce,
AllGather (world group only) and Broadcast, no all-to-all: a sub-group gather and the
all-to-all have CPU stand-ins built on AllReduce, for tests; Ascend and GPU use the real
primitives."""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.ops import constexpr
from mindspore.communication import GlobalComm, get_group_size, get_rank

_COLLECTIVES: dict = {}


def collective(kind, group: str, **options):
    """One primitive per (kind, group, options), made at first use."""
    key = (kind.__name__, group, tuple(sorted(options.items())))
    if key not in _COLLECTIVES:
        _COLLECTIVES[key] = kind(group=group, **options)
    return _COLLECTIVES[key]


def all_gather(x, group: str):
    """AllGather; on MindSpore's CPU backend, whose AllGather takes only the world group, a
    sub-group's gather is an AllReduce (float32, exact for counts below 2^24) of a zero
    buffer holding x in this rank's block."""
    if ms.get_context("device_target") != "CPU" or group == GlobalComm.WORLD_COMM_GROUP:
        return collective(ops.AllGather, group)(x)
    size, me = get_group_size(group), get_rank(group)
    own_block = ms.Tensor(np.eye(size, dtype=np.float32)[me].reshape((size,) + (1,) * x.ndim))
    total = collective(ops.AllReduce, group)(ops.expand_dims(ops.cast(x, ms.float32), 0) * own_block)
    return ops.cast(ops.reshape(total, (size * x.shape[0],) + tuple(x.shape[1:])), x.dtype)  # CPU AllReduce: floats


def exchange_rows(x, send_counts, recv_counts, group: str):
    """x [sum(send), m] -> [sum(recv), m]: ``AlltoAllV`` where the device has it (Ascend, GPU),
    else ``all_to_all_stand_in``."""
    width = x.shape[1]
    if ms.get_context("device_target") == "CPU":
        return all_to_all_stand_in(x, send_counts, recv_counts, group)
    exchange = collective(ops.AlltoAllV, group, block_size=width)
    flat = exchange(ops.reshape(x, (-1,)), list(send_counts), list(recv_counts))
    if sum(recv_counts) == 0:  # AlltoAllV returns a 0-d tensor for an empty receive
        return ops.zeros((0, width), x.dtype)
    return ops.reshape(flat, (sum(recv_counts), width))


@constexpr
def _group_place(group: str) -> tuple:
    """(group size, this rank's index in it, whether the device is the CPU), read on the host
    when a graph compiles (a compiled function cannot call these)."""
    return get_group_size(group), get_rank(group), ms.get_context("device_target") == "CPU"


def exchange_equal_rows(x, group: str):
    """x [G R, m] (block j: the R rows for rank j of ``group``) -> [G R, m] (block j: the R
    rows from rank j). Equal splits have static shapes, so this compiles inside a GRAPH_MODE /
    ``ms.jit`` step and needs no custom backward (each primitive has its own): ``AlltoAll``
    where the device has it (Ascend, GPU); on CPU a stand-in: this rank's blocks in its own
    slot of a zero [G, G, R, m] buffer, one AllReduce, the column of blocks sent to this
    rank read back (AllReduce's backward is an AllReduce of the gradients, which carries
    each received block's gradient to the block that sent it)."""
    size, me, on_cpu = _group_place(group)
    width = x.shape[1]
    if not on_cpu:
        return ops.AlltoAll(split_count=size, split_dim=0, concat_dim=0, group=group)(x)
    rows = x.shape[0] // size
    own_slot = ops.reshape(ops.one_hot(ms.Tensor(me, ms.int32), size, ms.Tensor(1.0, x.dtype),
                                       ms.Tensor(0.0, x.dtype)), (size, 1, 1, 1))
    buffer = ops.expand_dims(ops.reshape(x, (size, rows, width)), 0) * own_slot  # [source, destination, R, m]
    total = ops.AllReduce(group=group)(buffer)  # made here: a compiled step cannot fill a cache
    return ops.reshape(total[:, me], (size * rows, width))


def all_to_all_stand_in(x, send_counts, recv_counts, group: str):
    """A stand-in for all-to-all on MindSpore's CPU backend, which has none (AllReduce on any
    group, AllGather on the world group only): the count matrix is all-gathered, every rank writes its
    rows into its own [G, R, m] block of a zero [G, G, R, m] buffer (R = the largest count
    any rank sends any rank), AllReduce sums the buffers, and each rank reads the rows sent
    to it. It moves G^2 R m values instead of the rows themselves: for tests on CPU only,
    never on the Ascend or GPU path."""
    size, me = get_group_size(group), get_rank(group)
    width = x.shape[1]
    counts = all_gather(ms.Tensor(np.asarray(send_counts, np.int32)), group).asnumpy()
    rows = max(int(counts.max()), 1)
    place = np.concatenate([j * rows + np.arange(n) for j, n in enumerate(send_counts)]).astype(np.int32)
    mine = (ops.unsorted_segment_sum(x, ms.Tensor(place), size * rows) if place.size
            else ops.zeros((size * rows, width), x.dtype))
    own_block = ms.Tensor(np.eye(size, dtype=np.float32)[me].reshape(size, 1, 1), x.dtype)
    buffer = ops.expand_dims(mine, 0) * own_block  # mine in block ``me``, zeros elsewhere (no empty slices)
    total = ops.reshape(collective(ops.AllReduce, group)(buffer), (size * size * rows, width))
    take = np.concatenate([(j * size + me) * rows + np.arange(n) for j, n in enumerate(recv_counts)]).astype(np.int32)
    return ops.gather(total, ms.Tensor(take), 0) if take.size else ops.zeros((0, width), x.dtype)


class RowExchange(nn.Cell):
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
