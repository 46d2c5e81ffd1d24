"""Documents (text plus the domain it came from), user files, and the character budget."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List

from core.errors import ConfigError
from training.yaml_io import read_text


@dataclass(frozen=True)
class Document:
    """One piece of text and its domain name (the corpus, or a user file's domain)."""

    text: str
    domain: str


def read_user_file(name: str) -> List[Document]:
    """A .txt file is one document whose domain is the file's stem; a .jsonl file has one
    JSON object per line with a string ``text`` and an optional string ``domain`` (default:
    the stem). Blank lines are skipped."""
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"data.files: no such file: {name!r}")
    content = read_text(path, f"data.files: {name!r}")
    if path.suffix == ".txt":
        return [Document(content, path.stem)] if content else []
    documents = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"data.files: {name!r} line {number}: invalid JSON ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ConfigError(f"data.files: {name!r} line {number}: expected an object with a string field 'text'")
        domain = record.get("domain", path.stem)
        if not isinstance(domain, str) or not domain:
            raise ConfigError(f"data.files: {name!r} line {number}: 'domain' must be a non-empty string")
        if record["text"]:
            documents.append(Document(record["text"], domain))
    return documents


def limit_chars(documents: Iterable[Document], max_chars: int) -> List[Document]:
    """The leading documents up to ``max_chars`` characters in all (the last one cut);
    ``max_chars`` 0 keeps everything."""
    if max_chars <= 0:
        return list(documents)
    kept, left = [], max_chars
    for doc in documents:
        kept.append(doc if len(doc.text) <= left else Document(doc.text[:left], doc.domain))
        left -= len(doc.text)
        if left <= 0:
            break
    return kept
