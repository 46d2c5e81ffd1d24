"""Aux-loss-free bias update (DeepSeek-V3): b_i += u * sign(mean load - load_i), host side."""
import numpy as np
import pytest

from core.errors import ConfigError
from core.params import init_params
from models.moe_config import MoEConfig
from models.moe_layer import MoELayer


def router(**options):
    return MoELayer(MoEConfig(d_model=8, ffn_hidden=8, num_experts=4, router="aux_free",
                              router_options=options)).router


def test_bias_is_non_trainable_and_starts_at_zero():
    r = router()
    specs = r.param_specs()
    assert not specs["router.bias"].trainable and specs["router.weight"].trainable
    assert np.array_equal(init_params(specs, 0)["router.bias"], np.zeros(4, np.float32))


def test_after_step_moves_bias_against_the_load():
    r = router(bias_update_speed=0.1)
    params = {"router.bias": np.array([0.0, 1.0, 0.0, -1.0], np.float32), "router.weight": np.ones((8, 4))}
    new = r.after_step(params, {"tokens_per_expert": np.array([10.0, 2.0, 4.0, 4.0])})
    assert list(new) == ["router.bias"]  # only non-trainable state
    np.testing.assert_allclose(new["router.bias"], [-0.1, 1.1, 0.1, -0.9], rtol=1e-6)


def test_after_step_keeps_a_balanced_bias():
    r = router(bias_update_speed=0.1)
    bias = np.array([0.3, -0.2, 0.0, 0.5], np.float32)
    new = r.after_step({"router.bias": bias}, {"tokens_per_expert": np.full(4, 6.0)})
    np.testing.assert_array_equal(new["router.bias"], bias)


@pytest.mark.parametrize("options,setting", [(dict(score="relu"), "score"),
                                             (dict(bias_update_speed=-1e-3), "bias_update_speed"),
                                             (dict(bias_update_speed="fast"), "bias_update_speed"),
                                             (dict(gamma=1e-3), "gamma")])
def test_bad_options_are_named(options, setting):
    with pytest.raises(ConfigError, match=setting):
        router(**options)
