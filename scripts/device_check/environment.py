"""What the check runs on: Python, the packages the torch path uses (and the optional ones),
torch's view of the GPU, and whether F.grouped_matmul can use its CUDA kernel there.

    python3 -m scripts.device_check.environment --device cuda --json result.json
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.device_check.result import finish  # noqa: E402
from scripts.reporting.provenance import package_versions  # noqa: E402

PACKAGES = ("torch", "numpy", "transformers", "tokenizers", "safetensors", "triton", "pyyaml", "scipy", "matplotlib",
            "pytest", "hypothesis", "tensorboardX", "mindspore")


def gpu() -> Dict[str, Any]:
    """torch's CUDA view: available, name, capability, memory, CUDA and NCCL versions."""
    import torch
    import torch.nn.functional as tnf
    info: Dict[str, Any] = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
                            "grouped_mm": hasattr(tnf, "grouped_mm")}
    if info["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, capability=list(torch.cuda.get_device_capability(0)),
                    memory_gib=round(props.total_memory / 2 ** 30, 1), multiprocessors=props.multi_processor_count,
                    nccl=".".join(map(str, torch.cuda.nccl.version())))
    return info


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--json", metavar="PATH", help="write the result here")
    args = parser.parse_args(argv)
    found, card = package_versions(PACKAGES), gpu()
    problems = [] if found["torch"] else ["torch is not installed"]
    if args.device == "cuda":
        if not card["cuda_available"]:
            problems.append("torch sees no CUDA device")
        elif tuple(card["capability"]) < (8, 0) or not card["grouped_mm"]:
            problems.append(f"F.grouped_matmul cannot use grouped_mm here (SM {card['capability']}, "
                            f"torch.nn.functional.grouped_mm {'present' if card['grouped_mm'] else 'absent'})")
    where = f"{card['name']} (SM {card['capability'][0]}.{card['capability'][1]}, {card['memory_gib']} GiB, " \
            f"CUDA {card['torch_cuda']}, NCCL {card['nccl']})" if card["cuda_available"] else "no CUDA device"
    missing = [name for name in ("tensorboardX", "mindspore") if not found[name]]
    summary = (f"Python {platform.python_version()}, torch {found['torch']}, numpy {found['numpy']}, "
               f"transformers {found['transformers']}; {where}"
               + (f"; not installed: {', '.join(missing)}" if missing else ""))
    return finish("environment", {"status": "fail" if problems else "pass", "summary": "; ".join(problems + [summary]),
                                  "python": sys.version.split()[0], "versions": found, "gpu": card}, args.json)


if __name__ == "__main__":
    sys.exit(main())
