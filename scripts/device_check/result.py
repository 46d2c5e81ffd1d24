"""How each program of the device check ends: one line, its result as JSON, its exit status."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional


def finish(name: str, result: Dict[str, Any], path: Optional[str]) -> int:
    """Print ``name: status: summary``, write ``result`` to ``path`` (if given); 0 on pass."""
    print(f"{name}: {result['status']}: {result['summary']}", flush=True)
    if path:
        Path(path).write_text(json.dumps(result, indent=1, default=str))
    return 0 if result["status"] == "pass" else 1
