"""moe-routers: the routing methods of recent MoE papers, written once, run on MindSpore and PyTorch."""
from setuptools import find_packages, setup

setup(
    name="moe-routers",
    version="0.1.0",
    description="Mixture-of-Experts routers (AdaMoE, LocMoE, Switch, PanGu-Sigma RRE, expert choice, "
                "hash, unbiased skip/balanced) with one implementation for MindSpore and PyTorch",
    python_requires=">=3.9",
    packages=find_packages(include=[f"{name}{suffix}" for name in ("core", "parallel", "models", "backends", "launch",
                                                                     "training") for suffix in ("", ".*")]),
    install_requires=[
        "numpy>=1.24",  # the torch path runs on numpy 1 and 2; MindSpore's extra pins < 2
        "scipy>=1.10",
        "pyyaml>=6",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "tokenizers>=0.21",
        "safetensors>=0.4",
    ],
    extras_require={
        "torch": ["torch==2.13.0"],
        "mindspore": ["mindspore==2.10.0", "numpy<2"],  # MindSpore 2.10 fails on numpy 2 ("Numpy init failed")
        "tensorboard": ["tensorboardX>=2.6"],  # optional: without it one line says no events are written
        "npu": ["torch==2.13.0", "torch_npu"],
        "dev": ["pytest>=7", "hypothesis>=6"],
        "hf": ["transformers==5.23.0", "gguf==0.19.0", "accelerate==1.15.0"],  # conversion and pretrained experiments
    },
)
