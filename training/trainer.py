"""The training loop, framework-free: data -> train step (``backends.runtime``) -> logs,
validation, checkpoints, plots. Every framework call goes through the backend runtime.

    trainer = Trainer(config)            # or Trainer(config, resume=True)
    summary = trainer.run()

One step: the next batch (tokens [B, S+1], domain_ids [B, S]) -> inputs (tokens[:, :-1],
domain_ids), targets tokens[:, 1:] -> ``lm_objective`` -> AdamW at the scheduled learning
rate (``training.schedule``). A NaN/Inf loss or gradient norm skips the update and is
counted; ``train.max_bad_steps`` in a row stop the run (``TrainingStopped``) with the
last good checkpoint kept. After each good step, routers with host-side state
(``Router.after_step``) get their layer's metrics.

Randomness (``training.random_streams``): a stochastic router's routing noise is an input of
the step, drawn on the host for each sequence from (seed, step, its row in the global
batch), so it is the same at any world size and after any resume; each process's
generators are seeded from (seed, rank), and every rank's state is saved in checkpoints
and restored on that rank.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from backends.loss_scale import loss_scale_for
from backends.runtime import Runtime
from backends.train_step import forward_compiles
from core.errors import ConfigError
from models.dispatch.expert_parallel import exchange_compiles
from models.dispatch.slots import SLOT_DISPATCH
from models.lm_objective import lm_objective
from models.metrics import pooled_dropped_fraction
from models.routers import router_class
from models.routers.base import Router
from models.transformer import Transformer
from parallel.traffic import ELEMENT_BYTES, traffic_bytes
from training.checkpoint import Checkpoint, checkpoint_dir, latest_checkpoint
from training.config import RunConfig, save_config, transformer_config
from training.data.node_placement import check_rre_placement, streams
from training.data.pipeline import build_data
from training.distributed import Distributed, rank_log
from training.metrics_log import MetricsLog, read_records
from training.plots import plot_run
from training.random_streams import TRAIN, VALIDATION, process_seed, routing_noise
from training.run_lock import lock_run_dir, takes_lock
from training.schedule import learning_rate

ADAM_EPS = 1e-8


class TrainingStopped(RuntimeError):
    """Too many non-finite steps in a row; the message says what to do."""


class Trainer:
    """Builds data, model and train step from a validated ``RunConfig``; ``resume=True``
    continues from the newest checkpoint in ``config.run_dir``. ``log`` gets one line per
    event; ``progress`` shows a tqdm bar."""

    def __init__(self, config: RunConfig, resume: bool = False, log: Callable[[str], None] = print,
                 progress: bool = True, tensorboard: bool = True) -> None:
        self.config, self.log, self.progress, self.tensorboard = config, log, progress, tensorboard
        self.run_dir = Path(config.run_dir)
        # one writer per run directory: rank 0 locks it before anything is written (training.run_lock)
        self.run_lock = lock_run_dir(self.run_dir, log) if takes_lock() else None
        latest = latest_checkpoint(checkpoint_dir(self.run_dir))
        if resume and latest is None:
            raise ConfigError(f"--resume {self.run_dir}: no checkpoint in {checkpoint_dir(self.run_dir)} (the run "
                              f"stopped before its first): start it again with --config {self.run_dir / 'config.yaml'}")
        if not resume and latest is not None:
            raise ConfigError(f"run_dir={str(self.run_dir)!r} already holds checkpoints ({latest.name}): "
                              f"continue it with --resume {self.run_dir} or set another run_dir")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=self.run_dir).close()
        except OSError as error:
            raise ConfigError(f"run_dir={str(self.run_dir)!r}: cannot write there ({error.strerror or error})") from None
        t = config.train
        dispatch_mode = SLOT_DISPATCH if router_class(config.moe.router).fills_slots else config.moe.dispatch
        self.runtime = Runtime(config.backend, config.device, t.graph_mode and forward_compiles(
            config.parallel.expert_parallel, exchanges_compile=exchange_compiles(dispatch_mode, config.parallel.all_to_all)))
        self.dist = Distributed.start(config.backend, self.runtime.device, config.parallel, self.runtime.ops)
        self.log_dir = self.run_dir if self.dist.is_main else self.run_dir / "logs" / f"rank{self.dist.rank}"
        if self.dist.world > 1:
            self.log = log = rank_log(self.run_dir, self.dist.rank, log)
            self.progress = self.progress and self.dist.is_main
        self.runtime.seed(process_seed(config.seed, self.dist.rank))  # see training.random_streams
        self.dist.join_run_dir(self.run_dir, config.parallel.timeout_s)
        self.data = self.dist.main_first(lambda: build_data(config.data, seed=config.seed, log=log),
                                         "the data (tokenizer and token caches in data.cache_dir)",
                                         config.parallel.data_timeout_s)
        self.model = Transformer(transformer_config(config, self.data.tokenizer.vocab_size), self.dist.expert_parallel)
        self.specs = self.model.param_specs()
        self.module = self.runtime.module(self.model, self.dist.init_local(self.specs, config.seed), config.dtype)
        self.train_step = self.runtime.train_step(self.module, lm_objective, t.lr, (t.beta1, t.beta2), ADAM_EPS,
                                                  t.weight_decay, t.grad_clip, self.dist.run,
                                                  loss_scale_for(t.loss_scale, config.dtype, t.loss_scale_init,
                                                                 t.loss_scale_window),
                                                  distributed_optimizer=t.distributed_optimizer)
        start, end = self.dist.rows(t.batch_size)
        if (end - start) % t.grad_accum:
            raise ConfigError(f"train.grad_accum={t.grad_accum} must divide each rank's {end - start} sequences "
                              f"(train.batch_size={t.batch_size} over {self.dist.world} ranks)")
        topology = config.moe.router_options.get("topology")
        self.data, self.placement, self.batches, self.val_sets = streams(
            self.data, config.data.node_domains, t.batch_size, t.eval_batches,
            self.dist.run.layout.num_nodes if self.dist.run else None,
            topology.get("nodes") if isinstance(topology, dict) else None)
        check_rre_placement(config.moe, self.placement)
        self.domains_read = set()
        self.hooked = [(i, layer.router) for i, layer in enumerate(self.model.moe_layers)
                       if type(layer.router).after_step is not Router.after_step]
        self.noise_width = getattr(self.model.moe_layers[0].router, "noise_width", 0) if self.model.moe_layers else 0
        self.step, self.bad_in_row, self.skipped, self.elapsed = 0, 0, 0, 0.0
        self.good = True
        if resume:
            path, checkpoint = self.dist.agreed_checkpoint(checkpoint_dir(self.run_dir), log, self.specs)
            self._check_resumable(path, checkpoint)
            try:
                self.restore(checkpoint)
            except ConfigError as error:
                raise ConfigError(f"{path}: {error}") from None
            log(f"resumed from {path} (step {self.step})")
        self.num_params = sum(int(np.prod(s.shape)) for s in self.model.param_specs().values())

    # checkpoints
    def _check_resumable(self, path: Path, checkpoint: Checkpoint) -> None:
        """ConfigError when the checkpoint cannot continue this config (other model shapes,
        a step past ``train.steps``); a log line when another framework wrote it."""
        expected = {name: tuple(spec.shape) for name, spec in self.model.param_specs().items()}
        if checkpoint.experts is not None:  # this rank's experts only (Distributed.held_experts)
            first, end = checkpoint.experts
            expected.update({name: (end - first,) + shape[1:] for name, shape in expected.items()
                             if self.specs[name].expert_sharded})
        saved = {name: tuple(np.shape(value)) for name, value in checkpoint.model.items()}
        for name in sorted(set(expected) | set(saved)):
            if expected.get(name) != saved.get(name):
                raise ConfigError(f"{path}: written by another model ({name}: {saved.get(name, 'absent')} there, "
                                  f"{expected.get(name, 'absent')} in this config); resume it with the config "
                                  f"saved in {self.run_dir / 'config.yaml'} or start a new run_dir")
        if checkpoint.step > self.config.train.steps:
            raise ConfigError(f"train.steps={self.config.train.steps} is below the step of {path} "
                              f"({checkpoint.step}); raise train.steps to continue the run")
        if checkpoint.backend and checkpoint.backend != self.config.backend:
            self.log(f"{path.name} was written by {checkpoint.backend}: weights, optimizer state and data "
                     f"position carry over to {self.config.backend}; its random generator starts from the seed")

    def restore(self, checkpoint: Checkpoint) -> None:
        """Weights, optimizer state, random generators, data position, counters and the
        routers' host-side state (checkpoints written before it was saved have none)."""
        weights = self.dist.local(checkpoint.model, self.specs, checkpoint.experts)
        self.module.load_numpy(weights)
        self.train_step.load_master_weights(weights)
        self.train_step.load_optimizer_state(self.dist.local(checkpoint.optimizer, self.specs, checkpoint.experts))
        rng = self.dist.own_rng(checkpoint.rng)
        if rng:
            self.runtime.set_rng_state(rng)
        else:  # saved by fewer ranks: this rank's generators as at the start (routing noise needs none)
            self.runtime.seed(process_seed(self.config.seed, self.dist.rank))
        state = checkpoint.state
        self.batches.load_state_dict(state["data"])
        self.step, self.bad_in_row = checkpoint.step, int(state["bad_in_row"])
        self.skipped, self.elapsed = int(state["skipped"]), float(state["elapsed_s"])
        if self.train_step.loss_scale is not None and "loss_scale" in state:
            self.train_step.loss_scale.load_state_dict(state["loss_scale"])
        routers = state.get("routers", {})
        for layer in self.model.moe_layers:
            if layer.router.prefix in routers:
                layer.router.load_state_dict(routers[layer.router.prefix])

    def checkpoint(self) -> Checkpoint:
        state = {"data": self.batches.state_dict(), "bad_in_row": self.bad_in_row, "skipped": self.skipped,
                 "elapsed_s": self.elapsed}
        if self.train_step.loss_scale is not None:
            state["loss_scale"] = self.train_step.loss_scale.state_dict()
        routers = {layer.router.prefix: layer.router.state_dict() for layer in self.model.moe_layers}
        state["routers"] = {prefix: values for prefix, values in routers.items() if values}
        weights = {**self.module.numpy_params(), **self.train_step.master_weights()}  # float32 masters win
        return Checkpoint(step=self.step, model=weights,
                          optimizer=self.train_step.optimizer_state(),
                          rng=self.dist.gather_rng(self.runtime.rng_state()),
                          state=state, backend=self.config.backend, dtype=self.config.dtype)

    def save(self) -> Path:
        """Write a checkpoint; a failed write (disk full, directory gone) stops the run with
        the earlier checkpoints intact."""
        directory = checkpoint_dir(self.run_dir)
        try:
            path = self.dist.save(directory, self.checkpoint(), self.config.train.keep_checkpoints, self.specs)
        except OSError as error:
            raise TrainingStopped(f"step {self.step}: could not write a checkpoint in {directory} "
                                  f"({error.strerror or error}); {self._kept()}. Free space or fix the "
                                  f"directory, then --resume {self.run_dir}") from None
        if path is not None:
            self.log(f"step {self.step}: checkpoint {path}")
        return path

    # evaluation
    def validate(self) -> Dict[str, float]:
        """Mean LM cross-entropy over the fixed validation batches and its perplexity; with
        data placed by node, each domain's (``val_loss/<domain>``) and their mean."""
        losses = {}
        start, end = self.dist.rows(self.config.train.batch_size)
        for name, batches in self.val_sets.items():
            for index, (tokens, domains) in enumerate(batches):
                inputs = (tokens[start:end, :-1], domains[start:end]) + self._noise(VALIDATION, index, tokens)
                _, metrics = self.train_step.evaluate(inputs, (tokens[start:end, 1:],))
                losses.setdefault(name, []).append(float(metrics["lm_loss"]))
        means = self.dist.mean({name: np.mean(values) for name, values in losses.items()})
        val_loss = float(np.mean(list(means.values())))
        named = {f"val_loss/{name}": float(value) for name, value in means.items() if name}
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0)), **named}

    # training
    def _after_step(self, metrics: Dict[str, np.ndarray]) -> None:
        """Routers' host-side state updates, each given its own parameters only (the train
        step recompiles by itself when a router's ``static_key`` changes)."""
        for index, router in self.hooked:
            own = self.module.numpy_params(router.param_specs())
            updates = router.after_step(own, self.model.layer_aux(metrics, index))
            if updates:
                self.module.update_numpy(updates)

    def _noise(self, kind: int, index: int, tokens: np.ndarray) -> tuple:
        """(routing noise of this rank's rows of batch ``index``,) for a stochastic router, ()
        for the others: each row's from (seed, kind, index, row), ``training.random_streams``."""
        if not self.noise_width:
            return ()
        rows = self.dist.rows(self.config.train.batch_size)
        return (routing_noise(self.config.seed, kind, index, rows, tokens.shape[1] - 1, len(self.model.moe_layers),
                              self.noise_width),)

    def _one_step(self) -> tuple:
        t = self.config.train
        tokens, domains = next(self.batches)
        lr = learning_rate(self.step, t.lr, t.min_lr, t.warmup_steps, t.steps)
        start, end = self.dist.rows(t.batch_size)
        if self.placement is not None:
            self.domains_read.update(np.unique(domains[start:end]).tolist())
        inputs = (tokens[start:end, :-1], domains[start:end]) + self._noise(TRAIN, self.step, tokens)
        axes = (0, 0, 1)[:len(inputs)] + (0,)  # the noise is [MoE layers, rows, seq, width]
        loss, metrics, grad_norm = self.train_step.step(inputs, (tokens[start:end, 1:],), lr, t.grad_accum, axes)
        metrics = self.dist.mean(metrics)
        metrics.update(pooled_dropped_fraction(metrics))  # all ranks' drops over all their requests
        metrics.update(traffic_bytes(metrics, self.config.model.d_model, ELEMENT_BYTES[self.config.dtype], self.dist.world))
        self.step += 1
        self.good = math.isfinite(loss) and math.isfinite(grad_norm)
        if self.good:
            self.bad_in_row = 0
            self._after_step(metrics)
        elif self.train_step.overflowed:
            self.log(f"step {self.step}: float16 gradient overflow: update skipped, loss scale now "
                     f"{self.train_step.loss_scale.value:g}")
        else:
            self.bad_in_row += 1
            self.skipped += 1
            self.log(f"step {self.step}: non-finite loss {loss} / grad norm {grad_norm}: update skipped "
                     f"({self.bad_in_row} in a row, {self.skipped} in all)")
        return loss, metrics, grad_norm, lr, tokens.shape[0] * (tokens.shape[1] - 1)

    def run(self, until: Optional[int] = None) -> Dict[str, object]:
        """Train to ``train.steps`` (or stop after step ``until``: a planned interruption);
        returns a summary (also written to summary.yaml); plots are drawn at the end."""
        t = self.config.train
        last = t.steps if until is None else min(until, t.steps)
        if self.dist.is_main:
            save_config(self.config, self.run_dir / "config.yaml")
        metrics_log = MetricsLog(self.log_dir, resume_step=self.step or None,
                                 tensorboard=self.tensorboard and self.dist.is_main, log=self.log)
        self.log(f"{self.config.backend} on {self.runtime.target}{self.runtime.execution(self.train_step)}, "
                 f"{self.config.dtype}: "
                 f"{self.num_params:,} parameters, {len(self.model.moe_layers)} MoE layer(s), "
                 f"steps {self.step}..{t.steps}{self.dist.describe()}")
        if self.step >= t.steps:
            self.log(f"the run already reached train.steps={t.steps}: nothing to train "
                     f"(raise it with --set train.steps=N to continue)")
        interval: Dict[str, List] = {}
        rates: List[float] = []
        first_step = self.step
        started = time.perf_counter() - self.elapsed
        if self.step == 0 and t.eval_every:
            self._validate(metrics_log, started)
        bar = self._bar(last)
        try:
            while self.step < last:
                tick = time.perf_counter()
                loss, metrics, grad_norm, lr, tokens = self._one_step()
                seconds = time.perf_counter() - tick
                stopping = self.bad_in_row >= t.max_bad_steps
                if self.good:  # its metrics count
                    rates.append(tokens / seconds)
                    for key, value in {**metrics, "grad_norm": grad_norm, "lr": lr}.items():
                        interval.setdefault(key, []).append(np.asarray(value, np.float64))
                self.elapsed = time.perf_counter() - started
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(self._postfix(loss, metrics, rates), refresh=False)
                if self.step % t.log_every == 0 or self.step == last or stopping:
                    record = {key: np.mean(values, 0) for key, values in interval.items()}
                    record.update(tokens_per_s=np.median(rates[-t.log_every:]) if rates else None,
                                  skipped=self.skipped, elapsed_s=self.elapsed)
                    if self.train_step.loss_scale is not None:
                        record["loss_scale"] = self.train_step.loss_scale.value
                    metrics_log.log("train", self.step, record)
                    interval = {}
                if stopping:  # logged first, so the metrics show the skipped steps
                    raise TrainingStopped(self._stop_message())
                if t.eval_every and (self.step % t.eval_every == 0 or self.step == t.steps):
                    self._validate(metrics_log, started, bar)
                if t.checkpoint_every and (self.step % t.checkpoint_every == 0 or self.step == last):
                    self.save()
        finally:
            if bar is not None:
                bar.close()
            metrics_log.close()
        for name, path in (plot_run(self.run_dir) if self.dist.is_main else {}).items():
            self.log(f"plot {name}: {path}")
        return self._summary(rates, self.step - first_step)

    def _validate(self, metrics_log: MetricsLog, started: float, bar=None) -> None:
        values = self.validate()
        metrics_log.log("val", self.step, {**values, "elapsed_s": time.perf_counter() - started})
        line = f"step {self.step}: val_loss {values['val_loss']:.4f} ppl {values['val_ppl']:.1f}"
        if bar is not None:
            bar.write(line)
        else:
            self.log(line)

    def _bar(self, last: int):
        if not self.progress:
            return None
        from tqdm import tqdm
        return tqdm(total=last, initial=self.step, unit="step", dynamic_ncols=True, desc="train")

    @staticmethod
    def _postfix(loss: float, metrics: Dict[str, np.ndarray], rates: List[float]) -> Dict[str, str]:
        out = {"tok/s": f"{np.median(rates[-20:]):.0f}" if rates else "-", "loss": f"{loss:.3f}"}
        if "balance_loss" in metrics:
            out["bal"] = f"{float(metrics['balance_loss']):.3f}"
        if "dropped_fraction" in metrics:
            out["drop"] = f"{float(metrics['dropped_fraction']):.3f}"
        return out

    def _kept(self) -> str:
        latest = latest_checkpoint(checkpoint_dir(self.run_dir))
        return f"the last good checkpoint is {latest}" if latest else "no checkpoint was written yet"

    def _stop_message(self) -> str:
        return (f"stopped at step {self.step}: {self.bad_in_row} steps in a row had a NaN/Inf loss or gradient "
                f"(train.max_bad_steps={self.config.train.max_bad_steps}); {self._kept()}. Lower train.lr or raise "
                f"train.warmup_steps, then --resume {self.run_dir}")

    def _summary(self, rates: List[float], trained: int) -> Dict[str, object]:
        """The run's totals; ``val_loss`` is every validation of the run (resumed or not),
        ``trained_steps`` and ``tokens_per_s`` (None without a good step) this call's."""
        from training.yaml_io import write_yaml_atomic
        val_history = [r["val_loss"] for r in read_records(self.log_dir / "metrics.jsonl") if r["kind"] == "val"]
        summary = {"backend": self.config.backend, "device": self.runtime.target, "steps": self.step,
                   "trained_steps": trained, "skipped_steps": self.skipped, "elapsed_s": round(self.elapsed, 2),
                   "tokens_per_s": float(np.median(rates[1:] or rates)) if rates else None,
                   "val_loss": val_history, "parameters": self.num_params}
        if self.train_step.loss_scale is not None:
            summary.update(loss_scale=self.train_step.loss_scale.value, overflow_steps=self.train_step.overflows)
        if self.placement is not None:  # what this rank's rows held (data placed by node)
            summary["domains_read"] = [self.data.domain_names[d] for d in sorted(self.domains_read)]
        write_yaml_atomic(summary, self.log_dir / "summary.yaml")
        return summary

