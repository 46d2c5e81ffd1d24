"""Token-id -> expert tables (hash layers, PanGu-Sigma RRE), built with numpy on the host."""
import numpy as np
import pytest

from core.errors import ConfigError
from models.routers.token_tables import frequency_balanced_table, load_token_counts, random_table


def zipf_counts(vocab_size: int, seed: int = 0) -> np.ndarray:
    """Zipf-like counts 10000 / rank^0.8 (the largest id below one expert's share), shuffled."""
    rng = np.random.default_rng(seed)
    return rng.permutation((10000 / np.arange(1, vocab_size + 1) ** 0.8).astype(np.int64))


def mass_per_expert(table: np.ndarray, counts: np.ndarray, num_experts: int) -> np.ndarray:
    return np.bincount(table, weights=counts, minlength=num_experts)


@pytest.mark.parametrize("vocab_size,num_experts", [(100, 8), (37, 5), (3, 4)])
def test_random_table_is_balanced_within_one_id(vocab_size, num_experts):
    table = random_table(vocab_size, num_experts, np.random.default_rng(0))
    ids_per_expert = np.bincount(table, minlength=num_experts)
    assert table.min() >= 0 and table.max() < num_experts
    assert ids_per_expert.max() - ids_per_expert.min() <= 1


def test_random_table_depends_only_on_the_seed():
    a = random_table(200, 8, np.random.default_rng(5))
    assert np.array_equal(a, random_table(200, 8, np.random.default_rng(5)))
    assert not np.array_equal(a, random_table(200, 8, np.random.default_rng(6)))


def test_balanced_table_equalises_frequency_mass():
    counts, num_experts = zipf_counts(500), 8
    mass = mass_per_expert(frequency_balanced_table(counts, num_experts, np.random.default_rng(0)), counts, num_experts)
    random_mass = mass_per_expert(random_table(500, num_experts, np.random.default_rng(0)), counts, num_experts)
    assert mass.sum() == counts.sum()
    assert mass.max() - mass.min() <= counts.max()  # greedy list-scheduling bound
    assert mass.max() / mass.mean() < 1.02
    assert random_mass.max() / random_mass.mean() > 1.2  # the problem is hard for a random table


def test_balanced_table_spreads_zero_count_ids():
    counts = np.zeros(40, np.int64)
    counts[:4] = [50, 40, 30, 20]
    table = frequency_balanced_table(counts, 4, np.random.default_rng(1))
    assert sorted(table[:4]) == [0, 1, 2, 3]
    assert np.bincount(table, minlength=4).tolist() == [10, 10, 10, 10]
    assert np.array_equal(table, frequency_balanced_table(counts, 4, np.random.default_rng(1)))


def test_balanced_tables_of_different_draws_differ_and_keep_the_bound():
    """The draw orders ids of equal count: another draw is another table (per-layer tables),
    with the same greedy bound on the mass."""
    counts, num_experts = zipf_counts(500), 8
    tables = [frequency_balanced_table(counts, num_experts, np.random.default_rng(seed)) for seed in (0, 1)]
    assert (tables[0] != tables[1]).mean() > 0.2
    for table in tables:
        mass = mass_per_expert(table, counts, num_experts)
        assert mass.max() - mass.min() <= counts.max()


def test_load_token_counts_reads_pairs_and_sums_repeats(tmp_path):
    path = tmp_path / "counts.txt"
    path.write_text("0 5\n3 2\n\n3 1\n")
    assert load_token_counts(str(path), 5).tolist() == [5, 0, 0, 3, 0]


def test_missing_count_file_is_a_config_error_naming_it(tmp_path):
    path = str(tmp_path / "absent.txt")
    with pytest.raises(ConfigError, match="absent.txt"):
        load_token_counts(path, 5)


@pytest.mark.parametrize("line", ["7 1", "-1 3", "2 -4", "2", "a b", "1 2 3"])
def test_bad_count_line_is_a_config_error_naming_file_and_line(tmp_path, line):
    path = tmp_path / "counts.txt"
    path.write_text("0 1\n" + line + "\n")
    with pytest.raises(ConfigError, match=r"counts.txt.*line 2"):
        load_token_counts(str(path), 5)
