"""Router registry: ``router: <name>`` in a config picks a class registered here."""
from __future__ import annotations

from typing import Dict, Type

from core.errors import ConfigError

ROUTERS: Dict[str, Type] = {}


def register_router(name: str):
    """Class decorator: make a router available under ``name``."""
    def add(cls):
        cls.name = name
        ROUTERS[name] = cls
        return cls
    return add


def router_class(name: str) -> Type:
    if name not in ROUTERS:
        raise ConfigError(f"moe.router={name!r} is unknown; valid routers: {', '.join(sorted(ROUTERS))}")
    return ROUTERS[name]
