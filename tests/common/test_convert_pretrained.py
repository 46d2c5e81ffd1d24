"""scripts/convert_pretrained.py upcycle: a dense HF Llama folder becomes an HF Mixtral folder
whose experts copy the dense FFN; an MoE source is refused in one line (exit 2)."""
import numpy as np

from core.params import init_params
from models.transformer import Transformer
from models.transformer_config import TransformerConfig
from scripts.convert_pretrained import main
from training.hf_checkpoint import load_hf_checkpoint, save_hf_checkpoint

DENSE = TransformerConfig(vocab_size=32, d_model=16, num_layers=2, num_heads=4, num_kv_heads=2, ffn_hidden=24,
                          max_seq_len=16, moe_every=0)


def test_upcycle_writes_an_hf_mixtral_of_ffn_copies(tmp_path, capsys):
    dense = init_params(Transformer(DENSE).param_specs(), seed=0)
    save_hf_checkpoint(DENSE, dense, tmp_path / "llama")
    assert main(["upcycle", str(tmp_path / "llama"), str(tmp_path / "mixtral"), "--experts", "4", "--top-k", "2"]) == 0
    config, values = load_hf_checkpoint(tmp_path / "mixtral")
    assert (config.moe_every, config.moe.num_experts, config.moe.top_k) == (1, 4, 2)
    for j in range(4):
        np.testing.assert_array_equal(values["model.layers.1.block_sparse_moe.experts.w_down"][j],
                                      dense["model.layers.1.mlp.down_proj.weight"].T)
    assert main(["upcycle", str(tmp_path / "mixtral"), str(tmp_path / "again")]) == 2
    assert "upcycling starts from a dense model" in capsys.readouterr().err
