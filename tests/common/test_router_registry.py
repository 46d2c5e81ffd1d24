"""Every router in the registry (``models.routers.ROUTERS``) has its config,
``configs/<name>.yaml``, which loads with ``moe.router`` = name, and its MoE layer builds at
the test size the registry-driven backend and parity tests run it at
(tests/support/router_cases.py)."""
import pytest

from models.moe_layer import MoELayer
from tests.support.router_cases import ROUTER_NAMES, TEST_SIZE, router_config, router_config_path
from training.config import load_config


@pytest.mark.parametrize("name", ROUTER_NAMES)
def test_every_registered_router_has_a_config(name):
    path = router_config_path(name)
    assert path.exists(), f"router {name!r} is registered but has no config: add {path}"
    assert load_config(path).moe.router == name


@pytest.mark.parametrize("name", ROUTER_NAMES)
def test_layer_builds_at_test_size(name):
    layer = MoELayer(router_config(name))
    assert (layer.router.name, layer.config.d_model, layer.config.ffn_hidden) == (
        name, TEST_SIZE["d_model"], TEST_SIZE["ffn_hidden"])
