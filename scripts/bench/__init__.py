"""The pieces of scripts/bench_layer.py: shared settings and timing (common.py), the workers'
malloc and OpenMP settings (environment.py), one file per group of cases, each run in its own
spawned process (torch_cases.py: our layer on torch and the dense reference; peer_cases.py:
other MoE libraries; mindspore_cases.py: our layer on MindSpore), ratios, targets and tables
(report.py) and the sweep plot (plot.py). Also: phases.py (time per phase of the layer, both
frameworks) and gpu_grouped_gemm.py (TFLOP/s of the CUDA grouped kernel). Framework-free at
import: each case module imports its framework inside its builders."""
