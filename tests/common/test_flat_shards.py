"""The distributed optimizer's shard layout (``parallel.flat_shards``): the ranks' shards of
parameters whose total size G does not divide tile the zero-padded flat buffer exactly once."""
import numpy as np

from parallel.flat_shards import FlatShards


def test_shards_tile_the_padded_buffer():
    values = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(6, 11, dtype=np.float32)}
    layouts = [FlatShards(["a", "b"], [(2, 3), (5,)], None, 3, r) for r in range(3)]
    assert {(s.shard, s.padded) for s in layouts} == {(4, 12)}  # 11 elements, ceil(11 / 3) = 4 each
    pieces = [s.own_numpy(values) for s in layouts]
    np.testing.assert_array_equal(np.concatenate(pieces), np.r_[np.arange(11), 0].astype(np.float32))
