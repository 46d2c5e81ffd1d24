"""The device kernels behind F.grouped_matmul against the portable path (the reference).
On the device: torch's grouped_mm on CUDA (bf16), torch_npu's npu_grouped_matmul and
MindSpore's GroupedMatmul on Ascend: forward, grad_x and grad_w for group sizes with empty
groups and rows past the groups; each is skipped where its device is absent. On any
machine: the kernel choice, and the wrappers' row masking with the device call replaced by
a stand-in that follows the documented contract (cumulative int ends, last = N) and writes
NaN into rows it is not given."""
import os

import numpy as np
import pytest

SIZES = [[5, 0, 11, 0], [0, 16, 0, 0], [3, 4, 2, 7], [0, 0, 0, 0]]
ROWS, M, P = 24, 32, 16
BACKEND = os.environ.get("MOE_TEST_BACKEND", "torch")


def data(seed: int):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((ROWS, M)).astype(np.float32), rng.standard_normal((4, M, P)).astype(np.float32),
            rng.standard_normal((ROWS, P)).astype(np.float32))


def torch_run(kernel: str, device: str, dtype, sizes, seed: int = 0):
    """(y, grad_x, grad_w) as float32 numpy through torch_grouped_matmul's ``kernel``."""
    import torch
    from backends.torch_grouped_matmul import grouped_matmul
    x_np, w_np, cot_np = data(seed)
    x = torch.tensor(x_np, device=device, dtype=dtype, requires_grad=True)
    w = torch.tensor(w_np, device=device, dtype=dtype, requires_grad=True)
    y = grouped_matmul(x, w, torch.tensor(sizes, device=device), kernel=kernel)
    (y.float() * torch.tensor(cot_np, device=device)).sum().backward()
    return tuple(t.detach().float().cpu().numpy() for t in (y, x.grad, w.grad))


def assert_matches(got, want, rtol, atol):
    for name, a, b in zip(("y", "grad_x", "grad_w"), got, want):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=name)


def cuda_ok() -> bool:
    try:
        import torch
        return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)
    except ImportError:
        return False


def npu_ok() -> bool:
    from backends.torch_shell import npu_available
    return npu_available()


torch_only = pytest.mark.skipif(BACKEND != "torch", reason="torch kernels (run in the torch backend pass)")


@torch_only
def test_cpu_selects_portable():
    import torch
    from backends.torch_grouped_matmul import select_kernel
    x, w = torch.zeros((4, 8)), torch.zeros((2, 8, 8))
    assert select_kernel(x, w) == "portable"
    assert select_kernel(x.bfloat16(), w.bfloat16()) == "portable"


@torch_only
@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_cuda_wrapper_masks_rows_past_groups(monkeypatch, sizes):
    """The CUDA wrapper with grouped_mm replaced by a contract stand-in gives the portable
    numbers (rows past the groups zero in y and grad_x; no weight-gradient leak)."""
    import torch
    import torch.nn.functional as tnf
    from backends import torch_grouped_matmul as gm

    def stand_in(a, b, offs):
        assert offs.dtype == torch.int32 and int(offs[-1]) == a.shape[0]
        starts = torch.cat([offs.new_zeros(1), offs[:-1]]).tolist()
        return torch.cat([a[s:e] @ b[g] for g, (s, e) in enumerate(zip(starts, offs.tolist()))])

    monkeypatch.setattr(tnf, "grouped_mm", stand_in, raising=False)
    assert_matches(torch_run("cuda", "cpu", torch.float32, sizes), torch_run("portable", "cpu", torch.float32, sizes),
                   1e-5, 1e-6)


@torch_only
@pytest.mark.skipif(not cuda_ok(), reason="needs a CUDA GPU with SM >= 8.0")
@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_cuda_grouped_mm_matches_portable(sizes):
    import torch
    from backends.torch_grouped_matmul import select_kernel
    assert select_kernel(torch.zeros((2, M), device="cuda", dtype=torch.bfloat16),
                         torch.zeros((4, M, P), device="cuda", dtype=torch.bfloat16)) == "cuda"
    got = torch_run("cuda", "cuda", torch.bfloat16, sizes)
    want = torch_run("portable", "cuda", torch.bfloat16, sizes)
    assert_matches(got, want, 2e-2, 1e-1)  # bf16 (8 bits of mantissa), sums of up to 24 products


@torch_only
@pytest.mark.skipif(not npu_ok(), reason="needs torch_npu with an Ascend device")
@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_npu_grouped_matmul_matches_portable(sizes):
    import torch
    assert_matches(torch_run("npu", "npu", torch.float16, sizes), torch_run("portable", "npu", torch.float16, sizes),
                   1e-2, 5e-2)


def ms_ascend_ok() -> bool:
    if BACKEND != "mindspore":
        return False
    import mindspore as ms
    return ms.get_context("device_target") == "Ascend"


@pytest.mark.skipif(not ms_ascend_ok(), reason="MindSpore on Ascend (run in the mindspore backend pass)")
@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_mindspore_ascend_grouped_matmul_matches_portable(sizes):
    import mindspore as ms
    from backends import mindspore_grouped_matmul
    x_np, w_np, cot_np = data(0)

    def run(kernel):
        def loss(x, w):
            return (mindspore_grouped_matmul.grouped_matmul_kernel(kernel)(x, w, ms.Tensor(np.asarray(sizes), ms.int64))
                    * ms.Tensor(cot_np)).sum()
        y = mindspore_grouped_matmul.grouped_matmul_kernel(kernel)(ms.Tensor(x_np), ms.Tensor(w_np),
                                                        ms.Tensor(np.asarray(sizes), ms.int64))
        grad_x, grad_w = ms.grad(loss, grad_position=(0, 1))(ms.Tensor(x_np), ms.Tensor(w_np))
        return y.asnumpy(), grad_x.asnumpy(), grad_w.asnumpy()

    assert_matches(run("ascend"), run("portable"), 1e-3, 1e-3)
