"""The op vocabulary (backends/vocabulary.py) on PyTorch: CPU, CUDA, and Ascend via torch_npu."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as tnf
from scipy import optimize

from backends import torch_grouped_matmul
from backends.vocabulary import check_group


class TorchOps:
    """Implements ``backends.vocabulary.Ops`` with torch; tensors are created on ``device``."""

    name = "torch"
    float32 = torch.float32
    float16 = torch.float16
    bfloat16 = torch.bfloat16
    int32 = torch.int32
    index_dtype = torch.int64
    bool_ = torch.bool

    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device)

    # creation and conversion
    def tensor(self, array: Any, dtype=None):
        return torch.as_tensor(np.asarray(array), dtype=dtype, device=self.device)

    def zeros(self, shape: Sequence[int], dtype):
        return torch.zeros(tuple(shape), dtype=dtype, device=self.device)

    def ones(self, shape: Sequence[int], dtype):
        return torch.ones(tuple(shape), dtype=dtype, device=self.device)

    def arange(self, n: int, dtype):
        return torch.arange(n, dtype=dtype, device=self.device)

    def cast(self, x, dtype):
        return x if x.dtype == dtype else x.to(dtype)  # the check is cheaper than a no-op .to

    def stop_gradient(self, x):
        return x.detach()

    def to_numpy(self, x):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()

    # shape
    def reshape(self, x, shape):
        return x.reshape(tuple(shape))

    def transpose(self, x, perm):
        return x.permute(tuple(perm))

    def concat(self, xs, axis: int):
        return torch.cat(tuple(xs), dim=axis)

    def stack(self, xs, axis: int):
        return torch.stack(tuple(xs), dim=axis)

    def expand_dims(self, x, axis: int):
        return x.unsqueeze(axis)

    # elementwise
    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)
    sqrt = staticmethod(torch.sqrt)
    relu = staticmethod(torch.relu)
    rsqrt = staticmethod(torch.rsqrt)
    sin = staticmethod(torch.sin)
    cos = staticmethod(torch.cos)
    sigmoid = staticmethod(torch.sigmoid)
    tanh = staticmethod(torch.tanh)
    silu = staticmethod(tnf.silu)
    abs = staticmethod(torch.abs)
    maximum = staticmethod(torch.maximum)
    minimum = staticmethod(torch.minimum)

    def gelu(self, x):
        return tnf.gelu(x)

    def where(self, cond, a, b):
        return torch.where(cond, a, b)

    def clip(self, x, low: float, high: float):
        return torch.clamp(x, low, high)

    def uniform(self, shape, dtype):
        return torch.rand(tuple(shape), dtype=dtype, device=self.device)

    # reductions
    def sum(self, x, axis=None, keepdims: bool = False):
        return x.sum() if axis is None else x.sum(dim=axis, keepdim=keepdims)

    def mean(self, x, axis=None, keepdims: bool = False):
        return x.mean() if axis is None else x.mean(dim=axis, keepdim=keepdims)

    def max(self, x, axis=None, keepdims: bool = False):
        return x.max() if axis is None else x.amax(dim=axis, keepdim=keepdims)

    def global_norm(self, xs):
        if not xs:
            return torch.zeros((), dtype=torch.float32, device=self.device)
        return torch.nn.utils.get_total_norm([x.float() for x in xs])

    def logsumexp(self, x, axis: int):
        return torch.logsumexp(x, dim=axis)

    def softmax(self, x, axis: int):
        return torch.softmax(x, dim=axis)

    def log_softmax(self, x, axis: int):
        return torch.log_softmax(x, dim=axis)

    def cumsum(self, x, axis: int):
        return torch.cumsum(x, dim=axis).to(x.dtype)

    # indexing
    def topk(self, x, k: int):
        return torch.topk(x, k, dim=-1, largest=True, sorted=True)

    def argsort(self, x, descending: bool = False):
        return torch.argsort(x, dim=-1, descending=descending, stable=True)

    def one_hot(self, index, depth: int, dtype):
        return tnf.one_hot(index.long(), depth).to(dtype)

    def gather_rows(self, x, index):
        return x.index_select(0, index)

    def take_along_axis(self, x, index, axis: int):
        return torch.gather(x, axis, index)

    def index_add(self, target, index, source):
        return target.index_add(0, index, source)

    def write_index(self, x, index, update, axis: int):
        return x.index_copy(axis, index.reshape(1), update)

    def linear_sum_assignment(self, cost):
        array = cost.detach().float().cpu().numpy()
        flat = array.reshape((-1,) + array.shape[-2:])
        columns = np.stack([optimize.linear_sum_assignment(m)[1] for m in flat])
        return torch.as_tensor(columns.reshape(array.shape[:-1]), dtype=torch.int64, device=self.device)

    # matrix products
    def matmul(self, a, b):
        return torch.matmul(a, b)

    def bmm(self, a, b):
        return torch.bmm(a, b)

    def linear(self, x, w):
        return tnf.linear(x, w)

    def grouped_matmul(self, x, w, group_sizes):
        """Per-group mm on CPU, torch's grouped_mm on CUDA (bf16), torch_npu's grouped matmul
        on Ascend: ``backends.torch_grouped_matmul``."""
        return torch_grouped_matmul.grouped_matmul(x, w, group_sizes)

    # collectives (torch.distributed: gloo, NCCL, HCCL through torch_npu)
    def all_reduce(self, x, group):
        check_group("all_reduce", group)
        out = x.detach().clone()
        dist.all_reduce(out, group=group)
        return out

    def all_gather(self, x, group):
        check_group("all_gather", group)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.detach().contiguous(), group=group)
        return torch.cat(parts, 0)

    def reduce_scatter(self, x, group):
        check_group("reduce_scatter", group)
        out = x.new_empty((x.shape[0] // dist.get_world_size(group),) + tuple(x.shape[1:]))
        dist.reduce_scatter_single(out, x.detach().contiguous(), group=group)
        return out

    def all_to_all(self, x, send_counts, recv_counts, group):
        check_group("all_to_all", group)
        return AllToAll.apply(x, tuple(int(c) for c in send_counts), tuple(int(c) for c in recv_counts), group)

    def all_to_all_equal(self, x, group):
        check_group("all_to_all_equal", group)
        counts = (x.shape[0] // dist.get_world_size(group),) * dist.get_world_size(group)
        return AllToAll.apply(x, counts, counts, group)


def exchange_rows(x, send_counts, recv_counts, group):
    """``dist.all_to_all_single`` on rows: x [sum(send), m] -> [sum(recv), m]."""
    out = x.new_empty((sum(recv_counts),) + tuple(x.shape[1:]))
    dist.all_to_all_single(out, x.contiguous(), list(recv_counts), list(send_counts), group=group)
    return out


class AllToAll(torch.autograd.Function):
    """All-to-all of rows with uneven splits; backward sends the gradients back the way the
    rows came (the reverse all-to-all)."""

    @staticmethod
    def forward(ctx, x, send_counts, recv_counts, group):
        ctx.counts, ctx.group, ctx.rows = (send_counts, recv_counts), group, x.shape[0]
        return exchange_rows(x[:sum(send_counts)], send_counts, recv_counts, group)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        send_counts, recv_counts = ctx.counts
        back = exchange_rows(grad, recv_counts, send_counts, ctx.group)
        unsent = back.new_zeros((ctx.rows - back.shape[0],) + tuple(back.shape[1:]))
        return torch.cat([back, unsent], 0), None, None, None
