"""One process of the decode benchmark (scripts/bench_decode.py): ``torch`` holds transformers'
model and ours on torch, ``mindspore`` ours on MindSpore. The parent calls ``load`` once, then
``run`` once per timed generation (ProcessPoolExecutor with one worker keeps this module's
state between calls)."""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

WEIGHTS = "weights.safetensors"
IMPLEMENTATIONS = {"torch": ("transformers", "torch"), "mindspore": ("mindspore",)}


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """What every implementation generates: ``max_new_tokens`` after ``prompt`` (text; its ids
    come from the GGUF's tokenizer), greedy or sampled with ``temperature``/``top_k``/
    ``top_p``; ``layers``: keep the first blocks only (0: all); ``threads``: CPU threads of
    each framework's kernels; ``cpu``: the CPU every process is bound to (None: any);
    ``execution``: ours on MindSpore, compiled or eager."""

    gguf: str
    prompt: str
    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    seed: int
    layers: int
    threads: int
    cpu: Optional[int]
    execution: str

    def sampling(self, mode: str) -> Dict[str, float]:
        return {"temperature": 0.0, "top_k": 0, "top_p": 1.0} if mode == "greedy" else \
            {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}


@dataclasses.dataclass
class Timing:
    """One generation: seconds to the first new token (prompt forward and its sample), seconds
    of the one-token steps after it, their count, and the new token ids."""

    prefill_s: float
    decode_s: float
    steps: int
    tokens: List[int]

    def row(self) -> Dict[str, Any]:
        return {"prefill_ms": 1e3 * self.prefill_s, "ms_per_token": 1e3 * self.decode_s / max(self.steps, 1),
                "tokens": self.tokens}


class Transformers:
    """transformers' ``generate`` (its KV cache and sampling), timed by a stopping criterion
    that records when each new token is appended."""

    def __init__(self, model, settings: DecodeSettings) -> None:
        import torch
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList
        self.torch, self.model, self.settings, self.stamps = torch, model, settings, []
        stamps = self.stamps

        class Stamp(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                stamps.append(time.perf_counter())
                return torch.zeros(input_ids.shape[0], dtype=torch.bool)

        self.criteria = StoppingCriteriaList([Stamp()])
        pad = model.generation_config.pad_token_id
        model.generation_config.eos_token_id = None  # like ours without eos_id: all max_new_tokens, eos included
        self.configs = {mode: GenerationConfig(max_new_tokens=settings.max_new_tokens, do_sample=mode == "sample",
                                               pad_token_id=pad,
                                               **({} if mode == "greedy" else settings.sampling(mode)))
                        for mode in ("greedy", "sample")}

    def generate(self, prompt: List[int], mode: str) -> Timing:
        self.torch.manual_seed(self.settings.seed)
        self.stamps.clear()
        start = time.perf_counter()
        with self.torch.inference_mode():
            out = self.model.generate(self.torch.tensor([prompt]), generation_config=self.configs[mode],
                                      stopping_criteria=self.criteria)
        return Timing(self.stamps[0] - start, self.stamps[-1] - self.stamps[0], len(self.stamps) - 1,
                      out[0, len(prompt):].tolist())


class Ours:
    """``training.generation.Decoder`` on one backend."""

    def __init__(self, decoder, settings: DecodeSettings) -> None:
        self.decoder, self.settings = decoder, settings

    def generate(self, prompt: List[int], mode: str) -> Timing:
        result = self.decoder.generate([prompt], self.settings.max_new_tokens, seed=self.settings.seed,
                                       **self.settings.sampling(mode))
        return Timing(result.prefill_seconds, result.decode_seconds, result.decode_steps,
                      result.rows[0][len(prompt):].tolist())


STATE: Dict[str, Any] = {}


def truncated(hf: Dict[str, Any], weights: Dict[str, np.ndarray], layers: int):
    """(HF config, weights) of the first ``layers`` blocks (0: all)."""
    if not layers:
        return hf, weights
    kept = {name: value for name, value in weights.items()
            if not name.startswith("model.layers.") or int(name.split(".")[2]) < layers}
    return {**hf, "num_hidden_layers": layers}, kept


def load(group: str, settings: DecodeSettings, folder: str) -> Dict[str, Any]:
    """Build ``group``'s implementations. ``torch`` loads the GGUF with transformers, writes our
    float32 weights and its config to ``folder`` for the ``mindspore`` process and returns the
    prompt's token ids; ``mindspore`` reads them there."""
    import json
    from safetensors.numpy import load_file, save_file

    from backends.runtime import Runtime
    from models.transformer import Transformer
    from training.generation import Decoder
    from training.hf_checkpoint import from_hf_weights, gguf_model, hf_model_weights
    if settings.cpu is not None:
        os.sched_setaffinity(0, {settings.cpu})  # before any framework starts its threads: they inherit it
    start = time.perf_counter()
    info: Dict[str, Any] = {}
    if group == "torch":
        import torch
        from transformers import AutoTokenizer
        torch.set_num_threads(settings.threads)
        path = Path(settings.gguf)
        model = gguf_model(path).eval()
        hf, weights = truncated(*hf_model_weights(model), settings.layers)
        if settings.layers:
            model.model.layers = model.model.layers[:settings.layers]
            model.config.num_hidden_layers = settings.layers
            if getattr(model.config, "layer_types", None):
                model.config.layer_types = model.config.layer_types[:settings.layers]
        save_file(weights, str(Path(folder) / WEIGHTS))
        (Path(folder) / "config.json").write_text(json.dumps(hf))
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        info["prompt_ids"] = tokenizer.encode(settings.prompt)
        STATE["transformers"] = Transformers(model, settings)
    else:
        hf = json.loads((Path(folder) / "config.json").read_text())
        weights = load_file(str(Path(folder) / WEIGHTS))
    config, params = from_hf_weights(hf, weights, settings.gguf)
    runtime = Runtime(group, "cpu", graph_mode=False)
    if group == "mindspore":
        import mindspore as ms
        ms.device_context.cpu.op_tuning.threads_num(settings.threads)
    transformer = Transformer(config)
    decoder = Decoder(transformer, runtime.module(transformer, params), "eager" if group == "torch" else settings.execution)
    STATE[group] = Ours(decoder, settings)
    info["load_s"] = time.perf_counter() - start
    info["layers"] = config.num_layers
    return info


def run(name: str, prompt: List[int], mode: str) -> Optional[Dict[str, Any]]:
    """One generation by implementation ``name`` (transformers, torch, mindspore) -> its row."""
    start = time.perf_counter()
    row = STATE[name].generate(prompt, mode).row()
    row["wall_s"] = time.perf_counter() - start
    return row
