"""Faulty data: each bad user file is one ConfigError line naming the file (and the line or
setting where there is one); a damaged or mismatched cache (tokenizer, token stream) is
reported by name and rebuilt, giving exactly the data of a fresh build."""
import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError
from training.config import DataConfig
from training.data.pipeline import build_data
from training.data.tokenizer import EOS, train_bpe
from training.tiny_run import write_corpus


def data_config(tmp_path: Path, *files: Path, **overrides) -> DataConfig:
    settings = dict(corpora=[], files=[str(f) for f in files], vocab_size=300, seq_len=16,
                    cache_dir=str(tmp_path / "cache"))
    return DataConfig(**{**settings, **overrides})


BAD_FILES = {  # name -> (content, what the error must say besides the file name)
    "empty.txt": (b"", "has no text"),
    "blank.jsonl": (b"\n  \n", "has no text"),
    "empty_texts.jsonl": (b'{"text": ""}\n', "has no text"),
    "latin1.txt": ("caf\u00e9 na\u00efve".encode("latin-1"), "is not UTF-8 text"),
    "short.txt": (b"To be or not to be.", "data.seq_len=16"),
    "broken.jsonl": (b'{"text": "fine"}\n{"text": "cut\n', "line 2: invalid JSON"),
    "no_text.jsonl": (b'{"text": "fine"}\n{"body": "x"}\n', "line 2: expected an object with a string field 'text'"),
    "not_object.jsonl": (b'["text"]\n', "line 1: expected an object"),
    "number_text.jsonl": (b'{"text": 5}\n', "line 1: expected an object with a string field 'text'"),
    "bad_domain.jsonl": (b'{"text": "fine", "domain": 3}\n', "line 1: 'domain' must be a non-empty string"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_user_file_is_one_line_naming_it(tmp_path, name):
    content, says = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        build_data(data_config(tmp_path, path), seed=0)
    message = str(info.value)
    assert "\n" not in message and name in message and says in message, message


@pytest.fixture
def built(tmp_path):
    """A corpus's data config and its data built once (caches written)."""
    corpus = write_corpus(tmp_path / "corpus.txt", sentences=300)
    config = data_config(tmp_path, corpus)
    return config, build_data(config, seed=0)


def damage(path: Path, fault: str) -> None:
    """The faults any cache file can have: arbitrary bytes, or cut short."""
    path.write_bytes(b"PK\x03\x04 not a zip" if fault == "garbage" else path.read_bytes()[:100])


def assert_rebuilt(config: DataConfig, fresh, start: str, end: str = "") -> None:
    """A new build logs a line from ``start`` to ``end`` and gives the fresh build's data."""
    lines = []
    data = build_data(config, seed=0, log=lines.append)
    assert any(line.startswith(start) and line.endswith(end) for line in lines), lines
    np.testing.assert_array_equal(data.tokens, fresh.tokens)
    np.testing.assert_array_equal(data.train_starts, fresh.train_starts)
    assert data.tokenizer.name == fresh.tokenizer.name and data.dataset == fresh.dataset


@pytest.mark.parametrize("fault", ["garbage", "truncated", "other_vocab", "no_eos"])
def test_bad_cached_tokenizer_is_named_and_rebuilt(built, fault):
    config, fresh = built
    path, = Path(config.cache_dir, "tokenizers").glob("*.json")
    if fault in ("garbage", "truncated"):
        damage(path, fault)
    elif fault == "other_vocab":  # a larger vocabulary than data.vocab_size under the same name
        train_bpe([Path(config.files[0]).read_text()], 1000).save(str(path))
    else:
        saved = json.loads(path.read_text())
        saved["added_tokens"] = []
        del saved["model"]["vocab"][EOS]
        path.write_text(json.dumps(saved))
    assert_rebuilt(config, fresh, f"data: cached tokenizer {path} ", ": training it again")


@pytest.mark.parametrize("fault", ["garbage", "truncated", "ids_out_of_range", "lengths_differ"])
def test_damaged_token_cache_is_named_and_rebuilt(built, fault):
    config, fresh = built
    path, = Path(config.cache_dir, "tokens").glob("*/*.npz")
    if fault in ("garbage", "truncated"):
        damage(path, fault)
    else:
        with np.load(path) as saved:
            arrays = dict(saved)
        if fault == "ids_out_of_range":  # tokens of a larger vocabulary
            arrays["tokens"] = arrays["tokens"].astype(np.int64) + fresh.tokenizer.vocab_size
        else:
            arrays["domains"] = arrays["domains"][:-5]
        np.savez(path, **arrays)
    assert_rebuilt(config, fresh, f"data: token cache {path} is damaged (")
    assert build_data(config, seed=0).summary["cached_sources"] == [config.files[0]]  # the rebuilt cache is used
