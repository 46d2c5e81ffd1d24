"""Routers, one file each; importing this package registers them all."""
from models.routers import adamoe, switch, topk  # noqa: F401  (registration)
from models.routers import aux_free, expert_choice, hash, rre  # noqa: F401  (registration)
from models.routers import locmoe, locmoe_plus  # noqa: F401  (registration)
from models.routers import balanced, skip  # noqa: F401  (registration)
from models.routers.registry import ROUTERS, register_router, router_class  # noqa: F401
