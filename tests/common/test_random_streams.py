"""Every random stream of a run is derived from the seed by name (training.random_streams):
routing noise depends on (seed, step, row of the global batch) only, so a rank's rows are
the same at any world size; the streams of different seeds never overlap (with seed + rank,
seed 0 rank 1 was seed 1 rank 0)."""
import numpy as np

from training.random_streams import TRAIN, VALIDATION, process_seed, routing_noise


def test_process_seeds_of_different_seeds_do_not_overlap():
    seeds = {(seed, rank): process_seed(seed, rank) for seed in range(8) for rank in range(8)}
    assert len(set(seeds.values())) == len(seeds)
    assert process_seed(0, 1) != process_seed(1, 0)
    assert all(0 <= value < 2 ** 31 for value in seeds.values())


def test_routing_noise_of_a_row_does_not_depend_on_the_world_size():
    whole = routing_noise(3, TRAIN, 5, (0, 8), 6, 2, 4)
    assert whole.shape == (2, 8, 6, 4) and whole.dtype == np.float32
    assert 0.0 <= whole.min() and whole.max() < 1.0
    for world in (2, 4, 8):
        per_rank = 8 // world
        parts = [routing_noise(3, TRAIN, 5, (r * per_rank, (r + 1) * per_rank), 6, 2, 4) for r in range(world)]
        np.testing.assert_array_equal(np.concatenate(parts, 1), whole)


def test_routing_noise_differs_by_seed_step_kind_and_row():
    base = routing_noise(3, TRAIN, 5, (0, 2), 6, 2, 4)
    for other in (routing_noise(4, TRAIN, 5, (0, 2), 6, 2, 4), routing_noise(3, TRAIN, 6, (0, 2), 6, 2, 4),
                  routing_noise(3, VALIDATION, 5, (0, 2), 6, 2, 4)):
        assert not np.array_equal(other, base)
    assert not np.array_equal(base[:, 0], base[:, 1])
    np.testing.assert_array_equal(routing_noise(3, TRAIN, 5, (0, 2), 6, 2, 4), base)  # reproducible
