"""Where, when and how a result was made: the machine record and the command line."""
from __future__ import annotations

import datetime
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]


def machine() -> Dict[str, Any]:
    """UTC date, host CPU model, cores, load average at the call, platform and Python version."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or platform.machine())
    return {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "cpu": model, "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(), "python": platform.python_version()}


def package_versions(packages: Sequence[str]) -> Dict[str, Optional[str]]:
    """The installed version of each package (None: not installed)."""
    versions: Dict[str, Optional[str]] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def command_line(argv: Optional[Sequence[str]] = None) -> str:
    """How this script was started (its arguments: ``argv``, default sys.argv[1:]), as a
    command to paste from the repository root."""
    script = os.path.relpath(Path(sys.argv[0]).resolve(), ROOT)
    arguments = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["PYTHONPATH=. .venv/bin/python", script, *arguments])


def provenance(call: Mapping[str, Any]) -> str:
    """One markdown line: the command, then date, machine and load average of a ``machine()``
    record that also holds ``command``."""
    return (f"`{call.get('command', '')}`: {call.get('date_utc', '?')} UTC, {call.get('cores', '?')}-core "
            f"{call.get('cpu', '?')}, load average at the end {call.get('load_average', '?')}")
