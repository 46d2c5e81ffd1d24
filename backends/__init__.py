"""Backends: one op vocabulary (vocabulary.py), implemented once per framework
(torch_ops.py, mindspore_ops.py), plus a thin shell per framework for parameters, modules,
devices and seeds (torch_shell.py, mindspore_shell.py). Frameworks are imported lazily, so
a machine with only one of them installed can use that one."""
from __future__ import annotations

from core.errors import ConfigError

BACKENDS = ("torch", "mindspore")


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"backend={name!r}: valid backends are {', '.join(BACKENDS)}")
    try:
        __import__(name)
    except ImportError as error:
        extra = "torch" if name == "torch" else "mindspore"
        raise ConfigError(f"backend={name} but {name} is not installed ({error}); "
                          f"pip install -e '.[{extra}]'") from None
    return name
