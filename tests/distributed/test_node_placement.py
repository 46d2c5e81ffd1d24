"""Data placed by node on a real 2-node x 2-rank job (two launchers on loopback), torch and
MindSpore, one launch each: every rank reads only its node's domain, validation reports each
domain's loss, and PanGu-Sigma's RRE with domain placement sends no all-to-all row across
nodes (the byte counters) while rows do move between the ranks of a node."""
from __future__ import annotations

import pytest
import yaml

from tests.distributed.launch import ROOT, launch_nodes
from training.metrics_log import read_records
from training.tiny_run import tiny_run_config, write_corpus

RRE = {"router": "rre", "num_experts": 4, "top_k": 1,
       "router_options": {"num_domains": 2, "vocab_size": 300, "domains_by_node": True}}


@pytest.mark.parametrize("backend", ["torch", "mindspore"])
def test_each_node_reads_its_domain_and_rre_stays_on_node(tmp_path, backend):
    files = [write_corpus(tmp_path / f"{name}.txt", seed=seed) for seed, name in enumerate(("lyric", "saga"))]
    raw = tiny_run_config(tmp_path / "run", files[0], backend, moe=RRE, parallel={"expert_parallel": 4},
                          train={"steps": 3, "batch_size": 8, "eval_every": 3, "checkpoint_every": 0})
    raw["data"].update(files=[str(f) for f in files], node_domains=[["saga"], ["lyric"]])
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    launch_nodes(backend, 2, 2, ROOT / "scripts" / "train.py", ["--config", str(config), "--no-progress"],
                 tmp_path / "logs", timeout=400)
    run = tmp_path / "run"
    summaries = [run / "summary.yaml"] + [run / "logs" / f"rank{r}" / "summary.yaml" for r in (1, 2, 3)]
    read = [yaml.safe_load(path.read_text())["domains_read"] for path in summaries]
    assert read == [["saga"], ["saga"], ["lyric"], ["lyric"]]
    records = list(read_records(run / "metrics.jsonl"))
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 3
    assert all(r["a2a_bytes_across_nodes"] == 0 and r["a2a_bytes_inside_nodes"] > 0 for r in train)
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [0, 3]
    for r in val:
        assert r["val_loss"] == pytest.approx((r["val_loss/saga"] + r["val_loss/lyric"]) / 2, rel=1e-6)
