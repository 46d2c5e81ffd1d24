"""One ``torch.compile`` of our MoE layer (dropless, top-2, SwiGLU experts) forward and
backward: whether it compiles, how long that takes, how many graph breaks dynamo reports,
whether its output and input gradient match the eager layer's, and the step time of each.

    python3 -m scripts.device_check.compile_layer --device cuda --dtype bfloat16 --json result.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.device_check.result import finish  # noqa: E402


def median_ms(step: Callable[[], Any], repeats: int, synchronize: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        step()
        synchronize()
        times.append((time.perf_counter() - tick) * 1e3)
    return float(np.median(times))


def run(device: str, dtype: str, tokens: int, d_model: int, ffn: int, experts: int, repeats: int,
        backend: str) -> Dict[str, Any]:
    import torch
    from torch._dynamo.utils import counters

    from backends.torch_shell import TorchModule
    from models.moe_config import MoEConfig
    from models.moe_layer import MoELayer
    config = MoEConfig(d_model=d_model, ffn_hidden=ffn, num_experts=experts, top_k=2, router="topk",
                       expert_type="swiglu", dispatch="dropless")
    module = TorchModule(MoELayer(config), device=device, dtype=dtype)
    generator = np.random.default_rng(0)
    x = torch.tensor(generator.standard_normal((tokens, d_model)), dtype=module.params()["experts.w_up"].dtype,
                     device=device).requires_grad_()
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step(forward):
        def once():
            x.grad = None
            module.zero_grad(set_to_none=True)
            y, aux = forward(x)
            (y.float().square().mean() + aux["loss"]).backward()
            return y.detach().float().cpu().numpy(), x.grad.float().cpu().numpy()
        return once

    eager = step(module)
    want = eager()
    compiled_forward = torch.compile(module, backend=backend)
    compiled = step(compiled_forward)
    tick = time.perf_counter()
    try:
        got = compiled()
        synchronize()
    except Exception as error:  # reported, not required
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        return {"status": "fail", "summary": f"torch.compile ({backend}) failed: {type(error).__name__}: {first}"}
    compile_s = time.perf_counter() - tick
    scale = max(float(np.max(np.abs(want[0]))), 1e-30)
    rel = max(float(np.max(np.abs(g - w))) / max(float(np.max(np.abs(w))), 1e-30) for g, w in zip(got, want))
    limit = 2.0 ** -5 if dtype == "bfloat16" else 1e-4
    eager_ms, compiled_ms = median_ms(eager, repeats, synchronize), median_ms(compiled, repeats, synchronize)
    breaks = int(sum(counters["graph_break"].values()))
    summary = (f"compiled ({backend}) in {compile_s:.0f} s, {breaks} graph break(s); fwd+bwd {compiled_ms:.2f} ms "
               f"vs eager {eager_ms:.2f} ms ({eager_ms / compiled_ms:.2f}x); max rel diff {rel:.1e}")
    return {"status": "pass" if rel <= limit else "fail",
            "summary": summary if rel <= limit else f"differs from eager by {rel:.1e} (> {limit:.0e}): {summary}",
            "compile_s": compile_s, "graph_breaks": breaks,
            "graph_break_reasons": {reason.strip().splitlines()[0]: count
                                    for reason, count in counters["graph_break"].items()},
            "eager_ms": eager_ms, "compiled_ms": compiled_ms, "max_rel_diff": rel, "output_scale": scale}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--d-model", type=int, default=1024)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (inductor, aot_eager, ...)")
    parser.add_argument("--json", metavar="PATH", help="write the result here")
    args = parser.parse_args(argv)
    return finish("compile", run(args.device, args.dtype, args.tokens, args.d_model, args.ffn, args.experts,
                                 args.repeats, args.backend), args.json)


if __name__ == "__main__":
    sys.exit(main())
