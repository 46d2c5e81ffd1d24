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
from safetensors import safe_open
from safetensors.numpy import save_file

from models.errors import ConfigError

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


def save_checkpoint(directory: Path, checkpoint: Checkpoint, keep: int) -> Path:
    """Write ``checkpoint`` atomically, then delete all but the newest ``keep``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stray in directory.glob(".step_*.tmp*"):
        stray.unlink(missing_ok=True)
    final = directory / f"step_{checkpoint.step:08d}.safetensors"
    tmp = directory / f".{final.name}.tmp{os.getpid()}"
    tensors = {f"{group}/{name}": np.asarray(value, order="C")
               for group in GROUPS for name, value in getattr(checkpoint, group).items()}
    metadata = {"format": FORMAT, "step": str(checkpoint.step), "backend": checkpoint.backend,
                "dtype": checkpoint.dtype, "state": json.dumps(checkpoint.state)}
    metadata["crc32"] = _crc32(metadata, tensors)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink()
    return final


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint file; a damaged or foreign file is a ConfigError naming it."""
    path = Path(path)
    groups: Dict[str, Dict[str, np.ndarray]] = {group: {} for group in GROUPS}
    try:
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
        return Checkpoint(step=int(metadata["step"]), state=json.loads(metadata["state"]),
                          backend=metadata["backend"], dtype=metadata["dtype"], **groups)
    except ConfigError:
        raise
    except Exception as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"{path}: unreadable checkpoint ({reason})") from None


def newest_loadable(directory: Path, log: Callable[[str], None]) -> Tuple[Path, Checkpoint]:
    """The newest checkpoint in ``directory`` that loads, with its path; each damaged newer
    one is reported through ``log`` by name and skipped. ConfigError when none loads."""
    found = list_checkpoints(directory)
    for path in reversed(found):
        try:
            return path, load_checkpoint(path)
        except ConfigError as error:
            log(f"skipping checkpoint {path.name}: {str(error).replace(str(path) + ': ', '')}")
    raise ConfigError(f"{directory}: none of the {len(found)} checkpoint(s) can be read")
