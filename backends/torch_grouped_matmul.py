"""``F.grouped_matmul`` on torch: x [N, m] (rows sorted by group), w [G, m, p], group_sizes
[G] -> [N, p], rows past sum(group_sizes) zero in the output and in grad_x. One vocabulary
op, three kernels, chosen by device and dtype (``select_kernel``):

- ``portable``: one ``torch.mm`` per group (CPU, and any device or dtype the others do not
  take); the reference the device kernels are tested against.
- ``cuda``: ``torch.nn.functional.grouped_mm`` (CUTLASS grouped GEMM; bf16 on SM >= 8.0,
  16-byte aligned rows), differentiable in torch itself.
- ``npu``: ``torch_npu.npu_grouped_matmul`` (Ascend), forward and both gradients.

The device kernels take cumulative group ends whose last entry must be N, so every row is
given to a group (the last takes the rows past the groups) and those rows are zeroed on the
way in and out: they add nothing to the last group's weight gradient and come back zero.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as tnf


class PortableGroupedMatmul(torch.autograd.Function):
    """One ``mm`` per group written into one preallocated output, with a backward that
    writes each group's weight gradient into one [G, m, p] buffer (autograd through ``w[g]``
    would build G full-size zero gradients and add them up; through ``torch.cat`` it copies
    every output twice). Measured faster than ``torch.nn.functional.grouped_mm`` on CPU.
    The sizes are read on the host once."""

    @staticmethod
    def forward(ctx, x, w, group_sizes):
        sizes = group_sizes.tolist()
        out = x.new_empty((x.shape[0], w.shape[-1]))
        end = 0
        for g, size in enumerate(sizes):
            start, end = end, end + size
            if size:
                torch.mm(x[start:end], w[g], out=out[start:end])
        out[end:].zero_()
        ctx.sizes = sizes
        ctx.save_for_backward(x, w)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        grad_x = x.new_empty(x.shape) if ctx.needs_input_grad[0] else None
        grad_w = w.new_empty(w.shape) if ctx.needs_input_grad[1] else None
        end = 0
        for g, size in enumerate(ctx.sizes):
            start, end = end, end + size
            if grad_x is not None and size:
                torch.mm(grad[start:end], w[g].t(), out=grad_x[start:end])
            if grad_w is not None:
                if size:
                    torch.mm(x[start:end].t(), grad[start:end], out=grad_w[g])
                else:
                    grad_w[g].zero_()
        if grad_x is not None:
            grad_x[end:].zero_()
        return grad_x, grad_w, None


def portable(x, w, group_sizes):
    return PortableGroupedMatmul.apply(x, w, group_sizes)


def ends_covering_all_rows(x, group_sizes):
    """(ends [G] int64 with ends[-1] = N, inside [N, 1] bool: row < sum(group_sizes))."""
    ends = torch.cumsum(group_sizes.to(torch.int64), 0)
    inside = (torch.arange(x.shape[0], device=x.device) < ends[-1]).unsqueeze(-1)
    ends = torch.cat([ends[:-1], ends.new_full((1,), x.shape[0])])
    return ends, inside


def cuda(x, w, group_sizes):
    """``tnf.grouped_mm(x, w, offs=ends)``: 2-D x split along its rows at the int32 ends,
    3-D w [G, m, p]; autograd gives grad_x and grad_w."""
    ends, inside = ends_covering_all_rows(x, group_sizes)
    zero = x.new_zeros(())
    out = tnf.grouped_mm(torch.where(inside, x, zero), w, offs=ends.to(torch.int32))
    return torch.where(inside, out, zero)


class NpuGroupedMatmul(torch.autograd.Function):
    """torch_npu's grouped matmul, split on M (group_type 0) for y = x w_g and
    grad_x = grad w_g^T, and on K (group_type 2) for grad_w[g] = x_g^T grad_g; the
    group list holds cumulative ends (group_list_type 0)."""

    @staticmethod
    def forward(ctx, x, w, ends):
        import torch_npu
        ctx.save_for_backward(x, w, ends)
        return torch_npu.npu_grouped_matmul([x], [w], group_list=ends, split_item=2, group_type=0,
                                            group_list_type=0)[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        import torch_npu
        x, w, ends = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = torch_npu.npu_grouped_matmul([grad], [w.transpose(1, 2).contiguous()], group_list=ends,
                                              split_item=2, group_type=0, group_list_type=0)[0]
        grad_w = torch_npu.npu_grouped_matmul([x.t().contiguous()], [grad], group_list=ends, split_item=2,
                                              group_type=2, group_list_type=0)[0]
        return grad_x, grad_w.reshape(w.shape), None


def npu(x, w, group_sizes):
    ends, inside = ends_covering_all_rows(x, group_sizes)
    zero = x.new_zeros(())
    out = NpuGroupedMatmul.apply(torch.where(inside, x, zero).contiguous(), w.contiguous(), ends)
    return torch.where(inside, out, zero)


KERNELS = {"portable": portable, "cuda": cuda, "npu": npu}


def select_kernel(x, w) -> str:
    """``cuda`` for bf16 on an SM >= 8.0 GPU with 16-byte aligned rows and torch's grouped_mm;
    ``npu`` for float16/bfloat16/float32 on Ascend; else ``portable``."""
    if x.dtype != w.dtype:
        return "portable"
    aligned = x.shape[-1] % 8 == 0 and w.shape[-1] % 8 == 0
    if (x.device.type == "cuda" and x.dtype == torch.bfloat16 and aligned and hasattr(tnf, "grouped_mm")
            and torch.cuda.get_device_capability(x.device) >= (8, 0)):
        return "cuda"
    if x.device.type == "npu" and x.dtype in (torch.float16, torch.bfloat16, torch.float32) and w.shape[0] <= 128:
        return "npu"
    return "portable"


def grouped_matmul(x, w, group_sizes, kernel: str = "auto"):
    """The vocabulary op; ``kernel`` forces one (tests compare them), ``auto`` selects."""
    chosen: Callable = KERNELS[select_kernel(x, w) if kernel == "auto" else kernel]
    return chosen(x, w, group_sizes)
