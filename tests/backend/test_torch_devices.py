"""Our torch path in bfloat16 on each torch device here (the CPU always; CUDA where torch
sees an SM >= 8.0 GPU, else those cases skip) against float32 on the CPU, from the same
weights and inputs: the MoE layer's output and gradients, and train steps of a small
transformer with float32 master weights. On CUDA the layer's grouped matmuls must go
through torch's grouped_mm (the ``cuda`` kernel of ``F.grouped_matmul``); on the CPU
through the per-group reference. ``scripts/device_check.sh`` runs this file on the GPU."""
import math
import os

import numpy as np
import pytest

from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from tests.backend.test_grouped_matmul_kernels import cuda_ok
from tests.backend.test_transformer import tiny, tokens_of
from tests.support.harness import numpy_weights, random_inputs

pytestmark = pytest.mark.skipif(os.environ.get("MOE_TEST_BACKEND", "torch") != "torch",
                                reason="torch devices (run in the torch backend pass)")
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda",
                        marks=pytest.mark.skipif(not cuda_ok(), reason="needs a CUDA GPU, SM >= 8.0"))]
KERNEL = {"cpu": "portable", "cuda": "cuda"}
BF16_RTOL = 2.0 ** -5  # a few bf16 roundings (8-bit mantissa) along each path; measured under 2 ** -6 on the CPU


def bf16_exact(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (so both runs see the same inputs)."""
    import torch
    return torch.tensor(values).bfloat16().float().numpy()


def layer_run(values, x, cotangent, device: str, dtype: str, kernels: list):
    """(y, grad_x, weight gradients) of sum(y * cotangent) + aux loss as float32 numpy;
    ``kernels`` collects the grouped-matmul kernel of every call."""
    import torch

    from backends import torch_grouped_matmul as gm
    from backends.torch_shell import TorchModule
    module = TorchModule(MoELayer(layer_config()), device=device, dtype=dtype, values=values)
    xt = torch.tensor(x, device=device).to(module.ops.float32 if dtype == "float32" else torch.bfloat16)
    xt.requires_grad_(True)
    chosen = gm.select_kernel

    def spy(a, w):
        kernels.append(chosen(a, w))
        return kernels[-1]

    gm.select_kernel = spy
    try:
        y, aux = module(xt)
        ((y.float() * torch.tensor(cotangent, device=device)).sum() + aux["loss"]).backward()
    finally:
        gm.select_kernel = chosen
    grads = {name: p.grad.float().cpu().numpy() for name, p in module.params().items() if p.requires_grad}
    return y.detach().float().cpu().numpy(), xt.grad.float().cpu().numpy(), grads


def layer_config() -> MoEConfig:
    """Dropless top-2 over 8 SwiGLU experts; d and ffn multiples of 8 (grouped_mm's 16-byte rows)."""
    return MoEConfig(d_model=64, ffn_hidden=32, num_experts=8, top_k=2, router="topk", expert_type="swiglu",
                     dispatch="dropless", expert_init_std=0.1)


def assert_close_bf16(got: np.ndarray, want: np.ndarray, name: str) -> None:
    """Within bf16 rounding, relative to the largest value of ``want``."""
    scale = float(np.max(np.abs(want))) or 1.0
    np.testing.assert_allclose(got, want, rtol=BF16_RTOL * 4, atol=BF16_RTOL * scale, err_msg=name)


@pytest.mark.parametrize("device", DEVICES)
def test_moe_layer_in_bfloat16_matches_float32_on_cpu(device):
    config = layer_config()
    values = {k: bf16_exact(v) for k, v in numpy_weights(MoELayer(config), seed=3).items()}
    x = bf16_exact(random_inputs((96, config.d_model), seed=4))
    cotangent = random_inputs((96, config.d_model), seed=5)
    kernels = []
    got = layer_run(values, x, cotangent, device, "bfloat16", kernels)
    want = layer_run(values, x, cotangent, "cpu", "float32", [])
    assert kernels and set(kernels) == {KERNEL[device]}, kernels
    assert_close_bf16(got[0], want[0], "y")
    assert_close_bf16(got[1], want[1], "grad_x")
    assert got[2].keys() == want[2].keys()
    for name in want[2]:
        assert_close_bf16(got[2][name], want[2][name], name)


def train_losses(device: str, dtype: str, steps: int):
    """Losses of ``steps`` AdamW steps of the tiny transformer (one batch, repeated) and the
    train step, from fixed weights."""
    from backends.torch_shell import TorchModule
    from backends.train_step import make_train_step
    from models.lm_objective import lm_objective
    from models.transformer import Transformer
    model = Transformer(tiny(d_model=32))
    module = TorchModule(model, device=device, dtype=dtype, values=numpy_weights(model, seed=6))
    step = make_train_step("torch", module, lm_objective, lr=3e-3, betas=(0.9, 0.99), grad_clip=1.0)
    tokens = tokens_of((4, 13), seed=7)
    return [step.step((tokens[:, :-1],), (tokens[:, 1:],), lr=3e-3)[0] for _ in range(steps)], step


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_training_with_float32_masters_tracks_float32_on_cpu(device):
    import torch
    got, step = train_losses(device, "bfloat16", 6)
    want, _ = train_losses("cpu", "float32", 6)
    assert all(math.isfinite(loss) for loss in got) and step.skipped == 0
    np.testing.assert_allclose(got, want, rtol=2e-2)
    assert got[-1] < got[0] - 0.1  # it learns the repeated batch
    masters = step.hooks.master
    assert masters and all(m.dtype == torch.float32 and m.device.type == device for m in masters)
    assert all(p.dtype in (torch.bfloat16, torch.float32) and p.device.type == device for p in step.hooks.params)
