"""Tokenizers: the trained BPE round-trips text and is cached by text and vocab size; GPT-2's
matches the published ids; token streams are cached."""
import numpy as np
import pytest

from training.data.pipeline import build_data, load_sources
from training.data.tokenizer import cached_bpe, gpt2
from tests.support.small_text import small_data

SAMPLES = ["To be, or not to be: that is the question.", "In the beginning God created the heaven and the earth.",
           "naïve café — 日本語 emoji 🙂\ttabs\n\nand  double  spaces ", ""]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return cache, build_data(small_data(cache), seed=0)


def test_bpe_round_trips_any_text(built):
    _, data = built
    tok = data.tokenizer
    assert 257 < tok.vocab_size <= 320
    for text in SAMPLES:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    assert len(tok.encode(SAMPLES[0])) < len(SAMPLES[0].encode("utf-8"))  # merges were learned


def test_stream_decodes_to_the_source_text(built):
    _, data = built
    first = data.tokens[:data.summary["tokens"]["shakespeare"]]
    eos = np.flatnonzero(first == data.tokenizer.eos_id)
    assert len(eos) == 1 and eos[0] == len(first) - 1  # one (cut) play, then end-of-document
    source = load_sources(["shakespeare"], [], 6000)[0]
    assert data.tokenizer.decode(first[:-1]) == source.documents[0].text


def test_tokenizer_and_tokens_come_from_cache(built):
    cache, data = built
    assert data.summary["tokenizer_cached"] is False and data.summary["cached_sources"] == []
    again = build_data(small_data(cache), seed=3)
    assert again.summary["tokenizer_cached"] is True
    assert again.summary["cached_sources"] == ["shakespeare", "bible"]
    assert again.tokenizer.name == data.tokenizer.name
    np.testing.assert_array_equal(again.tokens, data.tokens)
    assert again.tokenizer.encode(SAMPLES[2]) == data.tokenizer.encode(SAMPLES[2])
    assert [p.stem for p in (cache / "tokenizers").glob("bpe320-*")] == [data.tokenizer.name.rsplit("-", 1)[0]]


def test_cache_key_follows_vocab_size_and_text(built):
    cache, data = built
    bigger = build_data(small_data(cache, vocab_size=360), seed=0)
    assert bigger.summary["tokenizer_cached"] is False and bigger.tokenizer.name != data.tokenizer.name
    assert bigger.tokenizer.vocab_size > data.tokenizer.vocab_size
    other_text = build_data(small_data(cache, max_chars_per_corpus=5000), seed=0)
    assert other_text.summary["tokenizer_cached"] is False
    assert other_text.tokenizer.name not in (data.tokenizer.name, bigger.tokenizer.name)


def test_cached_bpe_saves_then_loads(tmp_path):
    path = tmp_path / "tok.json"
    trained_tok, trained = cached_bpe(SAMPLES * 20, 280, path)
    loaded_tok, trained_again = cached_bpe(["completely different text"], 280, path)
    assert trained and not trained_again and path.is_file()
    assert loaded_tok.encode(SAMPLES[0]) == trained_tok.encode(SAMPLES[0])
    assert loaded_tok.eos_id == trained_tok.eos_id == 0


def test_gpt2_matches_published_ids():
    tok = gpt2()
    assert tok.vocab_size == 50257 and tok.eos_id == 50256
    assert tok.encode("Hello world") == [15496, 995]
    for text in SAMPLES:
        assert tok.decode(tok.encode(text)) == text
