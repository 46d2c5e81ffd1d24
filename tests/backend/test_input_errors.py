"""Bad input on the backend under test gives a one-line ConfigError naming the setting,
never a framework traceback: an input whose hidden size is not the layer's, a dtype name
the library does not know, and a dtype the device cannot compute in (found by asking the
framework itself for a 2x2 matmul: bfloat16 on MindSpore CPU; torch CPU runs every dtype)."""
import numpy as np
import pytest

from core.errors import ConfigError
from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from tests.support.harness import numpy_weights, random_inputs


@pytest.fixture(scope="module")
def layer():
    return MoELayer(MoEConfig(d_model=8, ffn_hidden=8, num_experts=4, top_k=2))


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("shape", [(6, 9), (2, 3, 7), (8,)])
def test_hidden_size_mismatch(runner, layer, shape):
    with pytest.raises(ConfigError) as error:
        runner.forward(layer, numpy_weights(layer), random_inputs(shape, seed=71))
    message = one_line(error)
    assert "moe.d_model=8" in message and str(shape) in message


def test_unknown_dtype_name(runner, layer):
    with pytest.raises(ConfigError) as error:
        runner.forward(layer, numpy_weights(layer), random_inputs((6, 8), seed=72), dtype="float8")
    message = one_line(error)
    assert "dtype='float8'" in message
    for name in ("float32", "bfloat16", "float16"):
        assert name in message


def framework_matmul_fails(backend: str, dtype: str) -> bool:
    """Ask the framework directly (not the library) whether a matmul runs in ``dtype``."""
    try:
        if backend == "torch":
            import torch
            a = torch.ones((2, 2), dtype=getattr(torch, dtype))
            torch.matmul(a, a)
        else:
            import mindspore as ms
            a = ms.ops.ones((2, 2), getattr(ms, dtype))
            ms.ops.matmul(a, a).asnumpy()
    except Exception:
        return True
    return False


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtype_the_device_cannot_run(runner, layer, dtype):
    if not framework_matmul_fails(runner.name, dtype):
        pytest.skip(f"{runner.name} computes in {dtype} on this device")
    with pytest.raises(ConfigError) as error:
        runner.forward(layer, numpy_weights(layer), random_inputs((6, 8), seed=73), dtype=dtype)
    message = one_line(error)
    assert f"dtype={dtype}" in message and "cannot run" in message
