"""TFLOP/s of F.grouped_matmul's CUDA kernel (torch grouped_mm, bf16) against one dense
bf16 GEMM with the same FLOPs, in the same run: x [N, d] split evenly over E groups times
w [E, d, f], versus [N, d] x [d, f]. Forward only and forward+backward. Needs a CUDA GPU
(SM >= 8.0); elsewhere it says so and exits 0.

    PYTHONPATH=. .venv/bin/python -m scripts.bench.gpu_grouped_gemm --tokens 16384 --d-model 4096 --ffn 14336
"""
from __future__ import annotations

import argparse
import sys

import torch

from backends.torch_grouped_matmul import grouped_matmul, select_kernel


def timed_ms(fn, repeats: int) -> float:
    """Median of CUDA-event times over ``repeats`` calls, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=16384, help="rows N (all groups together)")
    parser.add_argument("--d-model", type=int, default=4096)
    parser.add_argument("--ffn", type=int, default=14336)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing measured")
        return 0
    n, d, f, e = args.tokens, args.d_model, args.ffn, args.experts
    x = torch.randn(n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(e, d, f, device="cuda", dtype=torch.bfloat16, requires_grad=True) * 0.02
    w = w.detach().requires_grad_()
    dense_w = w[0].detach().clone().requires_grad_()
    sizes = torch.full((e,), n // e, device="cuda", dtype=torch.int64)
    sizes[-1] += n - int(sizes.sum())
    flops = 2.0 * n * d * f
    print(f"{torch.cuda.get_device_name()}: N={n} d={d} f={f} E={e}, bf16; kernel: {select_kernel(x, w)}")
    for label, fn, factor in [
        ("grouped fwd", lambda: grouped_matmul(x, w, sizes), 1),
        ("dense fwd", lambda: x @ dense_w, 1),
        ("grouped fwd+bwd", lambda: grouped_matmul(x, w, sizes).sum().backward(), 3),
        ("dense fwd+bwd", lambda: (x @ dense_w).sum().backward(), 3),
    ]:
        ms = timed_ms(fn, args.repeats)
        print(f"{label:<16} {ms:8.3f} ms  {factor * flops / ms / 1e9:8.1f} TFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
