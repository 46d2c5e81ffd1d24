"""Host-side access to a shell module's parameters as numpy, written once for both shells:
each shell gives ``params()`` (name -> framework tensor), ``ops`` and ``_assign(parameter,
array)`` (an in-place copy in the parameter's dtype)."""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import numpy as np

from core.errors import ConfigError


class HostValues:
    """``numpy_params``, ``load_numpy`` and ``update_numpy`` on top of the shell's hooks."""

    def numpy_params(self, names: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
        """Parameters as numpy copies: all of them, or only ``names``."""
        params = self.params()
        return {name: self.ops.to_numpy(params[name]) for name in (params if names is None else names)}

    def load_numpy(self, values: Dict[str, np.ndarray]) -> None:
        """Every parameter from ``values`` (full names), in place: functions already compiled
        by ``ms.jit`` keep reading the old memory after ``set_data``."""
        for name, parameter in self.params().items():
            self._assign(parameter, values[name])

    def update_numpy(self, values: Dict[str, np.ndarray]) -> None:
        """Set some parameters (e.g. a router's ``after_step`` result), leave the rest."""
        params = self.params()
        for name, value in values.items():
            if name not in params:
                raise ConfigError(f"update_numpy: {name!r} is not a parameter of this module")
            self._assign(params[name], value)
