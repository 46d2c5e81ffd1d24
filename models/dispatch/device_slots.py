"""LocMoE capacity dispatch: top-1 assignments with a capacity per (source device, expert).

Each of the ``ep`` devices (contiguous token chunks, ``core.topology``) may send at most
``capacity`` tokens to each expert, as in an all-to-all with fixed-size buffers: expert e's
slots are [device 0: C slots | device 1: C slots | ...]. Within a device, earlier tokens win.
Fills the slot layout of ``models.dispatch.slots`` (slot_token [E, ep*C], T = empty).
"""
from __future__ import annotations

from typing import List, Tuple

from models.dispatch.assignments import scalar


def device_capacity_slots(F, expert_index, expert_weight, num_experts: int,
                          device_ranges: List[Tuple[int, int]], capacity: int):
    """expert_index [T] (index dtype), expert_weight [T] float32 ->
    (slot_token [E, ep*C] index dtype, slot_weight [E, ep*C] float32)."""
    num_tokens = expert_index.shape[0]
    width = len(device_ranges) * capacity
    rows = num_experts * width
    mask = F.one_hot(expert_index, num_experts, F.float32)
    counts, offsets = (), ()
    for device, (start, end) in enumerate(device_ranges):
        if end > start:
            counts = counts + (F.cumsum(mask[start:end], 0),)
            offsets = offsets + (F.ones((end - start,), F.float32) * (device * capacity),)
    position = F.sum((F.concat(counts, 0) - 1.0) * mask, 1)
    kept = position < capacity
    dest = F.cast(expert_index, F.float32) * width + F.concat(offsets, 0) + position
    dest = F.cast(F.where(kept, dest, scalar(F, float(rows), F.float32)), F.index_dtype)
    token = F.cast(F.arange(num_tokens, F.index_dtype), F.float32) + 1.0
    weight = F.where(kept, expert_weight, scalar(F, 0.0, F.float32))
    source = F.stack([token, weight], 1)
    filled = F.index_add(F.zeros((rows + 1, 2), F.float32), dest, source)[:rows]
    slot_token = F.where(filled[:, 0] < 0.5, scalar(F, float(num_tokens), F.float32), filled[:, 0] - 1.0)
    return (F.reshape(F.cast(slot_token, F.index_dtype), (num_experts, width)),
            F.reshape(filled[:, 1], (num_experts, width)))
