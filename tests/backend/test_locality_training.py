"""Training with the LocMoE locality loss keeps more tokens on their own node: a short run of
scripts/locality_experiment.py's tiny layer (shared train step, synthetic domain-sharded data)
on the backend under test, without and with the loss."""
from scripts.locality_experiment import locality_run


def test_own_node_share_rises_with_the_locality_coefficient(runner):
    without = locality_run(runner.name, mu=0.0, steps=30, eval_batches=2)
    with_loss = locality_run(runner.name, mu=0.1, steps=30, eval_batches=2)
    assert with_loss["own_node_share"] > without["own_node_share"] + 0.15, (without, with_loss)
    assert with_loss["own_node_share"] > 0.7
    assert with_loss["mse"] < 1.25 * without["mse"]  # locality does not wreck the task
