"""F.grouped_matmul on the backend under test, forward and backward, against NumPy for
group sizes with empty groups (first, middle, last, all) and rows past the groups: an
expert that receives no token must not break dropless training. Tolerance rtol 1e-5 /
atol 1e-6 (float32, O(1) values)."""
from typing import Dict

import numpy as np
import pytest

from core.params import ParamSpec, normal_init
from tests.support.harness import random_inputs


class GroupedProbe:
    """forward(x [N, m]) = grouped_matmul(x, w, sizes), w [G, m, p] a parameter."""

    def __init__(self, sizes, m: int, p: int) -> None:
        self.sizes = np.asarray(sizes)
        self.shape = (len(sizes), m, p)

    def param_specs(self) -> Dict[str, ParamSpec]:
        return {"w": ParamSpec(self.shape, normal_init(1.0))}

    def check_inputs(self, x) -> None:
        pass

    def forward(self, F, params: dict, x):
        sizes = F.tensor(self.sizes.astype(np.int64), F.index_dtype)
        return F.grouped_matmul(x, params["w"], sizes), {"loss": F.zeros((), F.float32)}


@pytest.mark.parametrize("sizes", [[2, 3, 1], [0, 3, 3], [3, 0, 3], [3, 3, 0], [0, 0, 6], [0, 0, 0], [0, 2, 0], [1, 0, 2]],
                         ids=lambda sizes: "-".join(map(str, sizes)))
def test_grouped_matmul_forward_backward(runner, sizes):
    probe = GroupedProbe(sizes, m=4, p=5)
    w = random_inputs((3, 4, 5), seed=61)
    x = random_inputs((6, 4), seed=62)
    cot = random_inputs((6, 5), seed=63)
    out = runner.forward_backward(probe, {"w": w}, x, cot)
    bounds = np.r_[0, np.cumsum(sizes)]
    y, grad_x, grad_w = np.zeros((6, 5)), np.zeros((6, 4)), np.zeros((3, 4, 5))
    for g in range(3):
        rows = slice(bounds[g], bounds[g + 1])
        y[rows] = x[rows] @ w[g]
        grad_x[rows] = cot[rows] @ w[g].T
        grad_w[g] = x[rows].T @ cot[rows]
    np.testing.assert_allclose(out["y"], y, rtol=1e-5, atol=1e-6)
    assert np.all(out["y"][bounds[-1]:] == 0), "rows past the groups must be zero"
    np.testing.assert_allclose(out["grad_x"], grad_x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["grads"]["w"], grad_w, rtol=1e-5, atol=1e-6)
