"""Checkpoints: one safetensors file per step, written atomically, the last K kept.

``<run_dir>/checkpoints/step_00000200.safetensors`` holds numpy arrays under
``model/<param>``, ``optimizer/<key>`` (``backends.train_step`` names) and ``rng/<key>``,
and JSON metadata: the step, the backend and dtype that wrote it, ``state`` (data
position, counters) and a CRC-32 over the metadata and every tensor's bytes, so a damaged
file is refused by name rather than loaded. Names and layouts are the same for both
backends, so either one loads a checkpoint the other wrote.

Atomic write: the file is written under a temporary name in the same directory, flushed
and fsynced, then ``os.replace``d onto its final name and the directory fsynced; a writer
killed at any point leaves the earlier checkpoints untouched and at most a stray temporary
file, which the next save removes.

Expert-parallel runs: the ranks that own experts first write their expert stacks, cut
along the expert axis, to ``step_<N>.experts<i>of<n>.safetensors`` (each atomic, with its
index, count and global expert range in its metadata); after a barrier rank 0 writes the
main file, whose ``expert_shards`` records every shard: index, count, expert range and
CRC-32. A step counts only once its main file exists, so a set of shards without it is
never taken for a checkpoint. ``load_checkpoint`` checks each shard against that record (a
shard renamed, swapped or copied from another run is refused in one line) and concatenates
them: every checkpoint loads as the full model, at any expert-parallel size, on either
framework.
"""
from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from core.errors import ConfigError

FORMAT = "moe-checkpoint-1"
NAME = re.compile(r"^step_(\d{8})\.safetensors$")
GROUPS = ("model", "optimizer", "rng")


@dataclass
class Checkpoint:
    step: int
    model: Dict[str, np.ndarray]
    optimizer: Dict[str, np.ndarray]
    rng: Dict[str, np.ndarray]
    state: Dict[str, Any] = field(default_factory=dict)
    backend: str = ""
    dtype: str = "float32"
    experts: Optional[Tuple[int, int]] = None  # expert stacks hold only experts [first, end) (None: all)


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(directory: Path) -> List[Path]:
    """Complete checkpoints in ``directory``, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if NAME.match(p.name)]
    return sorted(found, key=lambda p: int(NAME.match(p.name).group(1)))


def latest_checkpoint(directory: Path) -> Optional[Path]:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def _crc32(metadata: Dict[str, str], tensors: Dict[str, np.ndarray]) -> str:
    """CRC-32 of the metadata (without its ``crc32``) and of each tensor's name, dtype,
    shape and bytes, in name order."""
    crc = zlib.crc32(json.dumps({k: v for k, v in metadata.items() if k != "crc32"}, sort_keys=True).encode())
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        crc = zlib.crc32(f"{name}:{array.dtype.str}:{array.shape}".encode(), crc)
        crc = zlib.crc32(array.reshape(-1).view(np.uint8), crc)
    return f"{crc:08x}"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(final: Path, checkpoint: Checkpoint, extra: Dict[str, str]) -> str:
    """Write one checkpoint file under a temporary name, fsync, rename onto ``final``;
    returns its CRC-32."""
    directory = final.parent
    tmp = directory / f".{final.name}.tmp{os.getpid()}"
    tensors = {f"{group}/{name}": np.asarray(value, order="C")
               for group in GROUPS for name, value in getattr(checkpoint, group).items()}
    metadata = {"format": FORMAT, "step": str(checkpoint.step), "backend": checkpoint.backend,
                "dtype": checkpoint.dtype, "state": json.dumps(checkpoint.state), **extra}
    metadata["crc32"] = _crc32(metadata, tensors)
    try:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as error:  # how safetensors reports I/O failures (a full disk)
            raise OSError(f"{final.name}: {error}") from None
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    return metadata["crc32"]


def shard_path(directory: Path, step: int, index: int, count: int) -> Path:
    """Expert shard ``index`` of ``count`` of the checkpoint at ``step``."""
    return Path(directory) / f"step_{step:08d}.experts{index}of{count}.safetensors"


def _shard_fields(index: int, count: int, experts: Tuple[int, int, int]) -> Dict[str, Any]:
    first, end, total = experts
    return {"index": int(index), "count": int(count), "experts": [int(first), int(end), int(total)]}


def save_expert_shard(directory: Path, checkpoint: Checkpoint, index: int, count: int,
                      experts: Tuple[int, int, int]) -> Path:
    """Write one expert shard (the expert stacks of one expert-parallel rank: ``model`` and
    ``optimizer`` entries cut along the expert axis; ``experts``: its global range (first,
    end) of ``total`` experts) atomically. Its checkpoint becomes loadable only when the
    main file, written after every shard, records it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = shard_path(directory, checkpoint.step, index, count)
    _write_atomic(final, checkpoint, {"shard": f"{index}/{count}",
                                      "shard_of": json.dumps(_shard_fields(index, count, experts))})
    return final


def shard_record(path: Path) -> Dict[str, Any]:
    """What a main file records of one written shard: index, count, expert range (from the
    shard's own metadata) and CRC-32. A shard that is not there is a ConfigError naming the
    shared-filesystem requirement (rank 0 reads the shards other ranks wrote)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
    except (OSError, SafetensorError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"{path}: rank 0 cannot read this expert shard, written by another rank ({reason}); "
                          f"the run directory must be on a filesystem every rank shares") from None
    return {**json.loads(metadata["shard_of"]), "step": int(metadata["step"]), "crc32": metadata["crc32"]}


def save_checkpoint(directory: Path, checkpoint: Checkpoint, keep: int, expert_shards: int = 0) -> Path:
    """Write ``checkpoint`` atomically, then delete all but the newest ``keep`` (with their
    shards). ``expert_shards`` > 0: the expert stacks are in that many shard files, already
    written (``save_expert_shard``); this main file records and commits them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stray in directory.glob(".step_*.tmp*"):
        stray.unlink(missing_ok=True)
    final = directory / f"step_{checkpoint.step:08d}.safetensors"
    extra = {}
    if expert_shards:
        records = [shard_record(shard_path(directory, checkpoint.step, i, expert_shards)) for i in range(expert_shards)]
        extra = {"expert_shards": str(expert_shards), "shard_records": json.dumps(records)}
    _write_atomic(final, checkpoint, extra)
    kept = list_checkpoints(directory)[-keep:]
    oldest = int(NAME.match(kept[0].name).group(1))
    for old in directory.glob("step_*.safetensors"):
        step = int(old.name[len("step_"):len("step_") + 8])
        if step < oldest:
            old.unlink(missing_ok=True)
    return final


def _read(path: Path) -> Tuple[Dict[str, str], Dict[str, Dict[str, np.ndarray]]]:
    """(metadata, tensors by group) of one checkpoint file, its CRC-32 checked."""
    groups: Dict[str, Dict[str, np.ndarray]] = {group: {} for group in GROUPS}
    with safe_open(str(path), framework="np") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ConfigError(f"{path}: not a checkpoint of this library (format {metadata.get('format')!r})")
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    if "crc32" in metadata and metadata["crc32"] != _crc32(metadata, tensors):
        raise ConfigError(f"{path}: damaged checkpoint (checksum mismatch)")
    for key, value in tensors.items():
        group, _, name = key.partition("/")
        groups[group][name] = value
    return metadata, groups


def load_checkpoint(path: Path, experts: Optional[Tuple[int, int, int]] = None) -> Checkpoint:
    """Read a checkpoint file and its expert shards; a damaged or foreign file, or a shard
    that is not the one the main file recorded, is a ConfigError naming it.

    ``experts`` (first, end, total): a rank that holds only experts [first, end) of
    ``total`` reads only the shards that overlap them and keeps only those experts
    (``Checkpoint.experts`` says so): a node's ranks do not each hold every expert. A
    checkpoint without shard records, or of another expert count, loads whole."""
    path = Path(path)
    try:
        metadata, groups = _read(path)
        shards = int(metadata.get("expert_shards", 0))
        held = None
        if shards:
            step = int(metadata["step"])
            records = json.loads(metadata.get("shard_records", "null")) or [None] * shards
            wanted = list(range(shards))
            if experts is not None and all(r and r["experts"][2] == experts[2] for r in records):
                first, end = experts[0], experts[1]
                wanted = [i for i in wanted if records[i]["experts"][0] < end and records[i]["experts"][1] > first]
                held = (first, end)
            stacks = _merge_shards(groups, [_load_shard(path, step, i, shards, records[i]) for i in wanted])
            if held is not None:  # the overlapping shards, cut to [first, end)
                offset = held[0] - records[wanted[0]]["experts"][0]
                for group, name in stacks:
                    groups[group][name] = groups[group][name][offset:offset + held[1] - held[0]]
        return Checkpoint(step=int(metadata["step"]), state=json.loads(metadata["state"]),
                          backend=metadata["backend"], dtype=metadata["dtype"], experts=held, **groups)
    except ConfigError:
        raise
    except Exception as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"{path}: unreadable checkpoint ({reason})") from None


def _describe(fields: Dict[str, Any]) -> str:
    first, end, total = fields["experts"]
    return f"shard {fields['index']} of {fields['count']} (experts {first}..{end - 1} of {total})"


def _load_shard(main: Path, step: int, index: int, count: int, record: Optional[Dict[str, Any]]) -> Checkpoint:
    """Expert shard ``index`` of the checkpoint ``main``, checked against the main file's
    ``record`` of it (None: written before shards were recorded; then its own index only)."""
    path = shard_path(main.parent, step, index, count)
    try:
        metadata, groups = _read(path)
    except ConfigError as error:
        raise ConfigError(f"{main}: expert shard {str(error)}") from None
    except Exception as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"{main}: expert shard {path.name} unreadable ({reason})") from None
    own = json.loads(metadata["shard_of"]) if "shard_of" in metadata else None
    if metadata.get("shard", f"{index}/{count}") != f"{index}/{count}" or (record and own and (
            own["index"], own["count"], own["experts"]) != (record["index"], record["count"], record["experts"])):
        held = _describe(own) if own else f"shard {metadata.get('shard')}"
        raise ConfigError(f"{main}: {path.name} holds {held}, not {_describe(record) if record else f'shard {index} of {count}'}"
                          f" (shard files renamed or swapped); restore the shards written with this checkpoint")
    if record and (metadata.get("crc32") != record["crc32"] or int(metadata.get("step", -1)) != step):
        raise ConfigError(f"{main}: {path.name} is not the shard written with this checkpoint (checksum "
                          f"{metadata.get('crc32')}, step {metadata.get('step')}; recorded {record['crc32']}, step "
                          f"{step}): copied from another run?; restore the shards written with it")
    return Checkpoint(step=step, state={}, backend=metadata.get("backend", ""), dtype=metadata.get("dtype", ""), **groups)


def _merge_shards(groups: Dict[str, Dict[str, np.ndarray]], shards: List[Checkpoint]) -> List[Tuple[str, str]]:
    """Expert stacks of the shards, concatenated along the expert axis in shard order, into
    ``groups``; returns their (group, name)s."""
    merged = []
    for group in ("model", "optimizer"):
        for name in getattr(shards[0], group):
            groups[group][name] = np.concatenate([getattr(shard, group)[name] for shard in shards], 0)
            merged.append((group, name))
    return merged


def newest_loadable(directory: Path, log: Callable[[str], None],
                    experts: Optional[Tuple[int, int, int]] = None) -> Tuple[Path, Checkpoint]:
    """The newest checkpoint in ``directory`` that loads (``experts``: as in
    ``load_checkpoint``), with its path; each damaged newer one is reported through ``log``
    by name and skipped. ConfigError when none loads."""
    found = list_checkpoints(directory)
    for path in reversed(found):
        try:
            return path, load_checkpoint(path, experts)
        except ConfigError as error:
            log(f"skipping checkpoint {path.name}: {str(error).replace(str(path) + ': ', '')}")
    raise ConfigError(f"{directory}: none of the {len(found)} checkpoint(s) can be read")
