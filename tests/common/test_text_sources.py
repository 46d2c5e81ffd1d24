"""Text sources: the registry corpora, user files, the character budget, wiki markup."""
import json

import pytest

from core.errors import ConfigError
from training.data.corpora import bible, shakespeare, wikipedia
from training.data.documents import Document, limit_chars, read_user_file
from training.data.pipeline import load_sources
from training.data.wikitext import plain_text


def test_shakespeare_is_the_plays():
    plays = list(shakespeare())
    assert len(plays) == 42
    assert {d.domain for d in plays} == {"shakespeare"}
    assert any("To be, or not to be" in d.text for d in plays)
    assert sum(len(d.text) for d in plays) > 4_000_000


def test_bible_is_66_books_of_verses_without_references():
    books = list(bible())
    assert len(books) == 66 and {d.domain for d in books} == {"bible"}
    assert books[0].text.startswith("In the beginning God created the heaven and the earth.\n")
    assert books[-1].text.endswith("The grace of our Lord Jesus Christ be with you all. Amen.")
    assert sum(d.text.count("\n") + 1 for d in books) == 31102  # verses in the KJV
    assert "Ge1:1" not in books[0].text


def test_wikipedia_articles_are_plain_text():
    articles = limit_chars(wikipedia(), 200_000)
    assert len(articles) > 3 and {d.domain for d in articles} == {"wikipedia"}
    text = "\n".join(d.text for d in articles)
    assert articles[0].text.startswith("Anarchism\n\nAnarchism is a political philosophy")
    for markup in ("{{", "[[", "<ref", "'''", "&nbsp;", "&quot;"):
        assert markup not in text, markup


def test_wiki_markup_is_reduced():
    wiki = ("{{Infobox|name={{nested|x}}}}'''Paris''' is the [[capital city|capital]] of [[France]]."
            "<ref name=a>{{cite web|url=x}}</ref> See [http://example.org the site].<!-- hidden -->\n"
            "== History ==\n* [[File:Paris.jpg|thumb|A [[view]]]]Founded early.\n{| class=t\n| cell\n|}\n"
            "[[Category:Cities]]")
    assert plain_text(wiki) == "Paris is the capital of France. See the site.\nHistory\nFounded early."


def test_limit_chars_keeps_leading_text():
    docs = [Document("a" * 5, "x"), Document("b" * 5, "y"), Document("c" * 5, "z")]
    assert limit_chars(docs, 7) == [Document("aaaaa", "x"), Document("bb", "y")]
    assert limit_chars(docs, 0) == docs
    kept = load_sources(["shakespeare", "bible"], [], 5000)
    assert [sum(len(d.text) for d in s.documents) for s in kept] == [5000, 5000]


def test_user_files_txt_and_jsonl(tmp_path):
    txt = tmp_path / "diary.txt"
    txt.write_text("Dear diary,\ntoday it rained.\n")
    assert read_user_file(str(txt)) == [Document("Dear diary,\ntoday it rained.\n", "diary")]
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_text(json.dumps({"text": "x = 1", "domain": "code"}) + "\n\n" + json.dumps({"text": "hello"}) + "\n")
    assert read_user_file(str(jsonl)) == [Document("x = 1", "code"), Document("hello", "mixed")]


@pytest.mark.parametrize("content, message", [
    ('{"text": "ok"}\n{"body": "no text"}\n', "line 2: expected an object with a string field 'text'"),
    ('{"text": "ok"}\nnot json\n', "line 2: invalid JSON"),
    ('{"text": "ok", "domain": 3}\n', "line 1: 'domain' must be a non-empty string"),
])
def test_bad_jsonl_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        read_user_file(str(path))
    assert str(info.value).startswith(f"data.files: {str(path)!r} {message}")


def test_missing_file_and_unknown_corpus_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"^data.files: no such file: '.*gone\.txt'$"):
        load_sources([], [str(tmp_path / "gone.txt")], 0)
    with pytest.raises(ConfigError, match=r"^data.corpora: unknown corpus 'gutenberg'; valid corpora: shakespeare"):
        load_sources(["gutenberg"], [], 0)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ConfigError, match=r"^data: .*empty\.txt has no text$"):
        load_sources([], [str(tmp_path / "empty.txt")], 0)
