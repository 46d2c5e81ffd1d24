"""The vocabulary's collectives refuse ``group=None`` on the backend under test: both
frameworks read it as the whole world, so a reduction meant for a sub-group (LocMoE's node
group) silently summed every rank's values. Refused before any communication, so this
runs in one process."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def ops(runner):
    if runner.name == "torch":
        from backends.torch_ops import TorchOps
        return TorchOps("cpu")
    from backends.mindspore_ops import MindSporeOps
    return MindSporeOps()


@pytest.mark.parametrize("call", ["all_reduce", "all_gather", "all_to_all", "all_to_all_equal"])
def test_collectives_refuse_the_default_group(ops, call):
    x = ops.tensor(np.ones((2, 3), np.float32))
    args = (x, [2], [2], None) if call == "all_to_all" else (x, None)
    with pytest.raises(ValueError, match=rf"F\.{call}: group=None \(the whole world\) is refused"):
        getattr(ops, call)(*args)
