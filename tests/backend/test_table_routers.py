"""Hash and RRE routers on the backend under test: the layer routes by the fixed tables
(never outside a token's domain group), balanced loads, no router gradients, clear errors."""
import numpy as np
import pytest

from core.errors import ConfigError
from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from tests.support.harness import numpy_weights, random_inputs
from tests.support.probes import RouterProbe

D, VOCAB = 8, 31


def layer(router: str, num_experts: int = 6, dispatch: str = "dropless", **options) -> MoELayer:
    return MoELayer(MoEConfig(d_model=D, ffn_hidden=8, num_experts=num_experts, top_k=1, router=router,
                              expert_type="gelu", dispatch=dispatch, capacity_factor=2.0,
                              router_options={"vocab_size": VOCAB, **options}))


def routed_experts(runner, moe: MoELayer, x, context) -> np.ndarray:
    probe = RouterProbe(moe, "expert_weight", ["expert_index"])
    weight, aux = runner.forward(probe, numpy_weights(probe), x, context)
    np.testing.assert_array_equal(weight, np.ones_like(weight))
    return aux["expert_index"].astype(int).reshape(-1)


def ids(shape, high, seed):
    return np.random.default_rng(seed).integers(0, high, shape).astype(np.int64)


def test_rre_sends_each_token_inside_its_domain_group_by_the_table(runner):
    moe = layer("rre", num_domains=3, seed=2)
    context = {"token_ids": ids((2, 12), VOCAB, 0), "domain_ids": ids((2, 12), 3, 1)}
    experts = routed_experts(runner, moe, random_inputs((2, 12, D)), context)
    domain, token = context["domain_ids"].reshape(-1), context["token_ids"].reshape(-1)
    np.testing.assert_array_equal(experts // 2, domain)
    table = numpy_weights(moe)["router.table"]
    np.testing.assert_array_equal(experts, table[domain * VOCAB + token])
    again = routed_experts(runner, layer("rre", num_domains=3, seed=2), random_inputs((2, 12, D), 7), context)
    np.testing.assert_array_equal(experts, again)  # depends on ids and seed only, not on x


def test_rre_load_on_uniform_ids_is_balanced_within_one_token(runner):
    moe = layer("rre", num_domains=3)
    context = {"token_ids": np.arange(VOCAB).reshape(1, VOCAB), "domain_ids": np.ones((1, VOCAB), np.int64)}
    _, aux = runner.forward(moe, numpy_weights(moe), random_inputs((1, VOCAB, D)), context)
    load = aux["tokens_per_expert"]
    assert load[[0, 1, 4, 5]].sum() == 0 and sorted(load[2:4]) == [15, 16]


def test_hash_routes_by_the_table_and_ignores_x(runner):
    moe = layer("hash", seed=4)
    context = {"token_ids": ids((3, 10), VOCAB, 3)}
    experts = routed_experts(runner, moe, random_inputs((3, 10, D)), context)
    np.testing.assert_array_equal(experts, numpy_weights(moe)["router.table"][context["token_ids"].reshape(-1)])
    np.testing.assert_array_equal(experts, routed_experts(runner, moe, random_inputs((3, 10, D), 9), context))


def test_balanced_hash_balances_frequency_mass(runner, tmp_path):
    counts = (200 / np.arange(1, VOCAB + 1) ** 0.8).astype(int)
    path = tmp_path / "counts.txt"
    path.write_text("".join(f"{i} {c}\n" for i, c in enumerate(counts)))
    moe = layer("hash", num_experts=4, table="balanced", counts_file=str(path))
    corpus = np.random.default_rng(0).permutation(np.repeat(np.arange(VOCAB), counts)).reshape(1, -1)
    _, aux = runner.forward(moe, numpy_weights(moe), random_inputs(corpus.shape + (D,)), {"token_ids": corpus})
    load = aux["tokens_per_expert"]
    assert load.sum() == counts.sum()
    assert load.max() - load.min() <= counts.max()
    assert load.max() / load.mean() < 1.1


@pytest.mark.parametrize("router,options", [("rre", dict(num_domains=2)), ("hash", {})])
def test_table_routers_have_no_router_gradient(runner, router, options):
    """A table router has no trainable parameter: gradients reach only the experts and x (capacity dispatch)."""
    context = {"token_ids": ids((1, 4), VOCAB, 0), "domain_ids": ids((1, 4), 2, 1)}
    moe = layer(router, dispatch="capacity", **options)
    x = random_inputs((1, 4, D))
    out = runner.forward_backward(moe, numpy_weights(moe), x, random_inputs(x.shape, 1), context)
    assert sorted(out["grads"]) == ["experts.w_down", "experts.w_up"]
    assert np.abs(out["grad_x"]).sum() > 0


@pytest.mark.parametrize("router,options,context,message", [
    ("rre", dict(num_domains=3), {"token_ids": np.zeros((1, 4))}, "needs domain_ids"),
    ("rre", dict(num_domains=3), {"domain_ids": np.zeros((1, 4))}, "needs token_ids"),
    ("rre", dict(num_domains=3), {"token_ids": np.zeros((1, 4)), "domain_ids": np.array([[0, 1, 3, 2]])},
     r"domain_ids range from 0 to 3; they must lie in \[0, moe.router_options.num_domains=3\)"),
    ("rre", dict(num_domains=3), {"token_ids": np.array([[0, 1, 31, 2]]), "domain_ids": np.zeros((1, 4))},
     "token_ids range from 0 to 31"),
    ("hash", {}, {}, "needs token_ids"),
    ("hash", {}, {"token_ids": np.array([[0, -1, 3, 2]])}, "token_ids range from -1 to 3"),
    ("hash", {}, {"token_ids": np.zeros((2, 4))}, r"token_ids has shape \(2, 4\)"),
])
def test_bad_side_inputs_are_config_errors(runner, router, options, context, message):
    moe = layer(router, **options)
    context = {k: v.astype(np.int64) for k, v in context.items()}
    with pytest.raises(ConfigError, match=message):
        runner.forward(moe, numpy_weights(moe), random_inputs((1, 4, D)), context)
