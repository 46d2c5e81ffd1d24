"""The pieces of scripts/bench_layer.py: shared settings and timing (common.py), and one
file per group of cases, each run in its own spawned process (torch_cases.py: our layer on
torch and the dense reference; peer_cases.py: other MoE libraries; mindspore_cases.py: our
layer on MindSpore). Framework-free at import: each case module imports its framework
inside ``run``."""
