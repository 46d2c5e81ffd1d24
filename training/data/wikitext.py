"""MediaWiki XML dump -> plain-text articles (main namespace, redirects skipped).

The markup is reduced with regular expressions: templates, tables, references, comments and
file/category links are dropped; ``[[target|label]]`` keeps the label, ``[url label]`` keeps
the label; bold/italic quotes and heading markers go; list markers are stripped; HTML
entities are decoded.
"""
from __future__ import annotations

import bz2
import html
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator, Tuple

_COMMENT = re.compile(r"<!--.*?-->", re.S)
_DROPPED_TAGS = re.compile(r"<(ref|math|gallery|timeline|score|syntaxhighlight|source|pre)\b[^>]*?"
                           r"(?:/>|>.*?</\1\s*>)", re.S | re.I)
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|.*?\|\}", re.S)
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXTERNAL = re.compile(r"\[(?:https?|ftp)://[^\s\]]+(?:\s+([^\]]*))?\]")
_QUOTES = re.compile(r"'{2,}")
_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$", re.M)
_LIST_MARK = re.compile(r"^[*#:;]+\s*", re.M)
_TABLE_LINE = re.compile(r"^\s*[|!].*$", re.M)
_BLANKS = re.compile(r"\n{3,}")
_DROPPED_LINK = re.compile(r"^\s*(file|image|category|media|wikt|wiktionary|[a-z]{2,3}(-[a-z]+)?):", re.I)


def _link_text(match: "re.Match[str]") -> str:
    body = match.group(1)
    if _DROPPED_LINK.match(body):
        return ""
    return body.rsplit("|", 1)[-1]


def _until_stable(pattern: "re.Pattern[str]", repl, text: str) -> str:
    """Apply a substitution until nothing changes (for nested {{...}} and [[...]])."""
    while True:
        text, count = pattern.subn(repl, text)
        if not count:
            return text


def plain_text(wikitext: str) -> str:
    """Wikitext of one article -> readable plain text."""
    text = _COMMENT.sub("", wikitext)
    text = _DROPPED_TAGS.sub("", text)
    text = _until_stable(_TEMPLATE, "", text)
    text = _until_stable(_TABLE, "", text)
    text = _until_stable(_LINK, _link_text, text)
    text = _EXTERNAL.sub(lambda m: m.group(1) or "", text)
    text = _TAG.sub("", text)
    text = _QUOTES.sub("", text)
    text = html.unescape(text).replace("\xa0", " ")
    text = _HEADING.sub(lambda m: m.group(2), text)
    text = _TABLE_LINE.sub("", text)
    text = _LIST_MARK.sub("", text)
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return _BLANKS.sub("\n\n", text).strip()


def articles(dump: Path) -> Iterator[Tuple[str, str]]:
    """(title, plain text) for each main-namespace, non-redirect page of a .xml.bz2 dump."""
    with bz2.open(dump, "rb") as stream:
        for _, element in ET.iterparse(stream, events=("end",)):
            if not element.tag.endswith("}page"):
                continue
            fields = {child.tag.rsplit("}", 1)[-1]: child for child in element}
            revision = fields.get("revision")
            text_node = None if revision is None else revision.find("{*}text")
            if fields.get("ns") is not None and fields["ns"].text == "0" and "redirect" not in fields \
                    and text_node is not None and text_node.text:
                body = plain_text(text_node.text)
                if body:
                    yield fields["title"].text or "", body
            element.clear()
