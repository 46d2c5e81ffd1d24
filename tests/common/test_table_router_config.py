"""Hash and RRE routers: options checked up front, tables fixed by the seed, nothing trainable."""
import numpy as np
import pytest

from core.errors import ConfigError
from core.params import init_params
from models.moe_config import MoEConfig
from models.moe_layer import MoELayer
from models.transformer import Transformer
from models.transformer_config import TransformerConfig


def layer(router: str, num_experts: int = 6, top_k: int = 1, **options) -> MoELayer:
    return MoELayer(MoEConfig(d_model=8, ffn_hidden=8, num_experts=num_experts, top_k=top_k, router=router,
                              router_options=options))


def test_rre_table_keeps_every_domain_inside_its_group():
    rre = layer("rre", num_domains=3, vocab_size=50, seed=1)
    table = init_params(rre.param_specs(), seed=0)["router.table"].reshape(3, 50)
    for domain in range(3):
        assert set(table[domain].astype(int) // 2) == {domain}
        assert sorted(np.bincount(table[domain].astype(int) - 2 * domain)) == [25, 25]


def test_tables_depend_on_the_seed_not_on_the_weight_seed():
    for router, options in (("rre", dict(num_domains=2)), ("hash", {})):
        def table(seed, init_seed):
            return init_params(layer(router, vocab_size=64, seed=seed, **options).param_specs(), init_seed)["router.table"]
        assert np.array_equal(table(3, 0), table(3, 1))
        assert not np.array_equal(table(3, 0), table(4, 0))


def model_tables(router: str, **options) -> list:
    """The token tables of a 3-layer model with an MoE layer in every block."""
    moe = MoEConfig(d_model=8, ffn_hidden=8, num_experts=6, top_k=1, router=router,
                    router_options=dict(vocab_size=64, seed=3, **options))
    model = Transformer(TransformerConfig(vocab_size=64, d_model=8, num_layers=3, num_heads=2, num_kv_heads=1,
                                          ffn_hidden=8, max_seq_len=8, moe_every=1, moe=moe))
    values = init_params(model.param_specs(), 0)
    return [values[f"model.layers.{i}.block_sparse_moe.router.table"] for i in range(3)]


@pytest.mark.parametrize("router,options", [("rre", dict(num_domains=2)), ("hash", {})])
def test_each_layer_has_its_own_table_unless_shared(router, options):
    """Default: layer i's table is seeded from (seed, i), so the layers' tables differ (a
    random pair of 6-expert tables agrees on ~1/6 of the ids); shared_table: one table."""
    own = model_tables(router, **options)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert (own[a] == own[b]).mean() < 0.5
    alone = MoELayer(MoEConfig(d_model=8, ffn_hidden=8, num_experts=6, top_k=1, router=router,
                               router_options=dict(vocab_size=64, seed=3, **options)), layer_index=1)
    assert np.array_equal(own[1], init_params(alone.param_specs(), 5)["router.table"])  # seeded by (seed, index)
    shared = model_tables(router, shared_table=True, **options)
    assert all(np.array_equal(shared[0], table) for table in shared[1:])
    assert np.array_equal(shared[0], init_params(layer(router, vocab_size=64, seed=3, shared_table=True,
                                                       **options).param_specs(), 0)["router.table"])


@pytest.mark.parametrize("router,options", [("rre", dict(num_domains=2, vocab_size=10)),
                                            ("hash", dict(vocab_size=10))])
def test_table_routers_have_no_trainable_parameters(router, options):
    specs = layer(router, **options).router.param_specs()
    assert specs and not any(spec.trainable for spec in specs.values())


@pytest.mark.parametrize("router,options,setting", [
    ("rre", dict(num_domains=4, vocab_size=10), "num_domains=4 must divide moe.num_experts=6"),
    ("rre", dict(vocab_size=10), "num_domains"),
    ("rre", dict(num_domains=2), "vocab_size"),
    ("hash", dict(), "vocab_size"),
    ("hash", dict(vocab_size=10, table="modulo"), "table"),
    ("hash", dict(vocab_size=10, table="balanced"), "counts_file"),
    ("hash", dict(vocab_size=10, counts_file="c.txt"), "counts_file"),
    ("hash", dict(vocab_size=10, seeds=1), "seeds"),
    ("hash", dict(vocab_size=10, seed="a"), "seed='a'"),
    ("rre", dict(num_domains=2, vocab_size=10, seed=-1), "seed=-1"),
    ("rre", dict(num_domains=2, vocab_size=2.5), "vocab_size=2.5"),
    ("rre", dict(num_domains=2, vocab_size=10, shared_table="yes"), "shared_table='yes': must be true or false"),
    ("hash", dict(vocab_size=10, shared_table=1), "shared_table=1: must be true or false"),
])
def test_bad_options_are_config_errors_naming_the_setting(router, options, setting):
    with pytest.raises(ConfigError, match=setting):
        layer(router, **options)


@pytest.mark.parametrize("router,options", [("rre", dict(num_domains=2, vocab_size=10)),
                                            ("hash", dict(vocab_size=10))])
def test_table_routers_are_top_1(router, options):
    with pytest.raises(ConfigError, match="moe.top_k=2"):
        layer(router, top_k=2, **options)


def test_unreadable_count_file_is_named(tmp_path):
    path = str(tmp_path / "no_such_counts.txt")
    with pytest.raises(ConfigError, match="no_such_counts.txt"):
        layer("hash", vocab_size=10, table="balanced", counts_file=path)


def test_balanced_hash_table_comes_from_the_count_file(tmp_path):
    path = tmp_path / "counts.txt"
    path.write_text("".join(f"{i} {c}\n" for i, c in enumerate([90, 10, 10, 10, 10, 10, 10, 10, 10, 10])))
    hashed = layer("hash", num_experts=2, vocab_size=10, table="balanced", counts_file=str(path))
    table = init_params(hashed.param_specs(), 0)["router.table"].astype(int)
    assert (table == table[0]).sum() == 1  # the frequent id alone balances the other nine
