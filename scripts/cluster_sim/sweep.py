"""A sweep on the simulated cluster: build it, run each planned item, and always clean up."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Callable, List, Sequence, Tuple, TypeVar

from scripts.cluster_sim.network import Cluster
from scripts.cluster_sim.outcome import Failure

Item = TypeVar("Item")
Result = TypeVar("Result")


def sweep(prefix: str, plan: Sequence[Item], one: Callable[[Cluster, Path, int, Item], Result],
          scratch_prefix: str) -> Tuple[List[Result], int]:
    """(results of the items that finished, exit status): ``one(cluster, scratch, index, item)``
    for every item; the cluster is removed on exit, failure, Ctrl-C or SIGTERM, and the scratch
    folder (the runs' logs) is kept when a run failed. Root only (status 2 otherwise)."""
    if os.geteuid() != 0:
        print("error: network namespaces need root: run as root (sudo)", file=sys.stderr)
        return [], 2
    cluster, results, status = Cluster(prefix), [], 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below
    scratch = Path(tempfile.mkdtemp(prefix=scratch_prefix))
    try:
        cluster.build()
        for index, item in enumerate(plan):
            results.append(one(cluster, scratch, index, item))
        shutil.rmtree(scratch)
    except Failure as error:
        print(f"error: {error}", file=sys.stderr)
        status = 1
    except (KeyboardInterrupt, SystemExit):
        print("interrupted: cleaning up", file=sys.stderr)
        status = 130
    finally:
        cluster.remove()
    return results, status
