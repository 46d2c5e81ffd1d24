"""TFLOP/s of F.grouped_matmul's CUDA kernel (torch grouped_mm, bf16) against one dense
bf16 GEMM with the same FLOPs, in the same run: x [N, d] split evenly over E groups times
w [E, d, f], versus [N, d] x [d, f]. Forward only and forward+backward. Needs a CUDA GPU
(SM >= 8.0); elsewhere it says so and exits 0, unless --device cpu asks for a rehearsal on
the CPU (the per-group kernel, small sizes: the numbers say nothing about a GPU).

    python3 -m scripts.bench.gpu_grouped_gemm --tokens 16384 --d-model 4096 --ffn 14336 --experts 8,64 --json gemm.json
    PYTHONPATH=. .venv/bin/python -m scripts.bench.gpu_grouped_gemm --device cpu --tokens 256 --d-model 64 --ffn 64
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

from backends.torch_grouped_matmul import grouped_matmul, select_kernel


def timed_ms(fn: Callable[[], object], repeats: int, device: str) -> float:
    """Median time of ``repeats`` calls after 3 warm-up calls: CUDA events on a GPU, the
    wall clock on the CPU."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            tick = time.perf_counter()
            fn()
            times.append((time.perf_counter() - tick) * 1e3)
    return sorted(times)[len(times) // 2]


def measure(n: int, d: int, f: int, e: int, repeats: int, device: str) -> Dict[str, object]:
    """The kernel F.grouped_matmul picks for bf16 here, and ms and TFLOP/s of each case."""
    x = torch.randn(n, d, device=device, dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(e, d, f, device=device, dtype=torch.bfloat16) * 0.02).requires_grad_()
    dense_w = w[0].detach().clone().requires_grad_()
    sizes = torch.full((e,), n // e, device=device, dtype=torch.int64)
    sizes[-1] += n - int(sizes.sum())
    flops = 2.0 * n * d * f
    rows: List[Dict[str, object]] = []
    for label, fn, factor in [
        ("grouped fwd", lambda: grouped_matmul(x, w, sizes), 1),
        ("dense fwd", lambda: x @ dense_w, 1),
        ("grouped fwd+bwd", lambda: grouped_matmul(x, w, sizes).sum().backward(), 3),
        ("dense fwd+bwd", lambda: (x @ dense_w).sum().backward(), 3),
    ]:
        ms = timed_ms(fn, repeats, device)
        rows.append({"case": label, "ms": ms, "tflops": factor * flops / ms / 1e9})
    by_case = {row["case"]: row for row in rows}
    return {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "kernel": select_kernel(x, w),
            "tokens": n, "d_model": d, "ffn": f, "experts": e, "dtype": "bfloat16", "rows": rows,
            "grouped_over_dense_fwd_bwd": by_case["grouped fwd+bwd"]["tflops"] / by_case["dense fwd+bwd"]["tflops"]}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=16384, help="rows N (all groups together)")
    parser.add_argument("--d-model", type=int, default=4096)
    parser.add_argument("--ffn", type=int, default=14336)
    parser.add_argument("--experts", default="8", help="groups E, or a comma list (one measurement each)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a rehearsal of this script with the per-group kernel")
    parser.add_argument("--json", metavar="PATH", help="also write the result here")
    args = parser.parse_args(argv)
    try:
        experts = [int(item) for item in args.experts.split(",")]
    except ValueError:
        parser.error(f"--experts {args.experts!r}: expected whole numbers separated by commas")
    if min([args.tokens, args.d_model, args.ffn, args.repeats] + experts) < 1:
        parser.error("--tokens, --d-model, --ffn, --experts and --repeats must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing measured")
        return 0
    points = []
    for e in experts:
        result = measure(args.tokens, args.d_model, args.ffn, e, args.repeats, args.device)
        print(f"{result['device']}: N={args.tokens} d={args.d_model} f={args.ffn} E={e}, bf16; "
              f"kernel: {result['kernel']}")
        for row in result["rows"]:
            print(f"{row['case']:<16} {row['ms']:8.3f} ms  {row['tflops']:8.1f} TFLOP/s")
        print(f"grouped / dense TFLOP/s (fwd+bwd): {result['grouped_over_dense_fwd_bwd']:.2f}", flush=True)
        points.append(result)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"points": points}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
