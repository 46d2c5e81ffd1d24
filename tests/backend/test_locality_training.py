"""Training with the LocMoE locality loss keeps more tokens on their own node: a short run of
scripts/locality_experiment.py's tiny layer (shared train step, synthetic domain-sharded data)
on the backend under test, without and with the loss."""
import pytest

from backends.runtime import Runtime
from scripts.locality_experiment import locality_run


@pytest.fixture(scope="module")
def runtime(runner):
    """The runner's backend as a Runtime, in the execution mode the runner chose."""
    return Runtime(runner.name, "cpu", graph_mode=getattr(runner, "mode", None) == "graph")


def test_own_node_share_rises_with_the_locality_coefficient(runtime):
    without = locality_run(runtime, mu=0.0, steps=30, eval_batches=2)
    with_loss = locality_run(runtime, mu=0.1, steps=30, eval_batches=2)
    assert with_loss["own_node_share"] > without["own_node_share"] + 0.15, (without, with_loss)
    assert with_loss["own_node_share"] > 0.7
    assert with_loss["mse"] < 1.25 * without["mse"]  # locality does not wreck the task
