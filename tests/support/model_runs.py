"""Run whole models (integer token inputs, several outputs) on the backend of a harness
runner: forward passes, and an LM objective with its gradients as a trainer computes them
(MindSpore GRAPH_MODE: the whole value-and-grad step compiled with ``ms.jit``)."""
from __future__ import annotations

from typing import Dict

import numpy as np

from models.lm_objective import lm_objective


def to_backend(runner, array):
    if runner.name == "torch":
        return runner.torch.as_tensor(np.asarray(array))
    return runner.ms.Tensor(np.asarray(array))


def to_numpy(value):
    """Backend outputs (tensors, tuples, dicts of tensors) -> numpy."""
    if isinstance(value, dict):
        return {k: to_numpy(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(to_numpy(v) for v in value)
    if hasattr(value, "detach"):
        return value.detach().float().numpy() if value.is_floating_point() else value.detach().numpy()
    return value.asnumpy()


def run_forward(runner, component, values: Dict[str, np.ndarray], *arrays, dtype: str = "float32"):
    """component's forward on numpy inputs (None allowed) -> numpy outputs."""
    module = runner.module(component, values, dtype)
    inputs = [None if a is None else to_backend(runner, a) for a in arrays]
    if runner.name == "torch":
        with runner.torch.no_grad():
            return to_numpy(module(*inputs))
    return to_numpy(module(*inputs))


def lm_step(runner, model, values: Dict[str, np.ndarray], tokens, targets, domain_ids=None, routing_noise=None,
            objective=lm_objective) -> dict:
    """logits, loss, metrics and gradients (by parameter name) of ``objective(F, (logits,
    aux), targets)``; domain_ids and routing_noise go to the model."""
    module = runner.module(model, values)
    extra = tuple(None if a is None else to_backend(runner, a) for a in (domain_ids, routing_noise))
    x, y = to_backend(runner, tokens), to_backend(runner, targets)
    if runner.name == "torch":
        logits, aux = module(x, *extra)
        loss, metrics = objective(module.ops, (logits, aux), y)
        loss.backward()
        grads = {name: (np.zeros(p.shape, np.float32) if p.grad is None else p.grad.numpy())
                 for name, p in module.params().items() if p.requires_grad}
        return {"logits": to_numpy(logits), "loss": float(loss.detach()), "metrics": to_numpy(metrics), "grads": grads}
    ms = runner.ms
    model.check_inputs(x, *extra)
    weights = module.trainable_params()
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)  # learn the metric names without a second compile
    keys = sorted(objective(module.ops, module(x, *extra), y)[1])
    ms.set_context(mode=mode)

    def loss_fn(x, domain_ids, routing_noise, y):
        logits, aux = module(x, domain_ids, routing_noise)
        loss, metrics = objective(module.ops, (logits, aux), y)
        return loss, logits, tuple(metrics[k] for k in keys)

    grad_fn = ms.value_and_grad(loss_fn, None, weights, has_aux=True)
    if runner.mode == "graph":
        grad_fn = ms.jit(grad_fn)
    (loss, logits, metric_values), grad_values = grad_fn(x, *extra, y)
    return {"logits": logits.asnumpy(), "loss": float(loss.asnumpy()),
            "metrics": dict(zip(keys, to_numpy(metric_values))),
            "grads": {p.name: g.asnumpy() for p, g in zip(weights, grad_values)}}
