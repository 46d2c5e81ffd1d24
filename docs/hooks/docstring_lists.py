"""MkDocs hook: render the lists in the code's docstrings as lists.

The docstrings start a list on the line after its lead-in sentence (``Gate ...:`` then
``- grap_relu ...``), as plain text reads best; Python-Markdown needs a blank line before a
list. This adds a Markdown preprocessor, to the pages and to mkdocstrings' rendering of
docstrings alike, that inserts that blank line (outside code blocks).
"""
import re

from markdown import Extension
from markdown.preprocessors import Preprocessor
from mkdocs.plugins import event_priority

ITEM = re.compile(r"^\s*(?:[-*+]|\d+\.)\s")
FENCE = re.compile(r"^\s*(```|~~~)")


class ListSpacing(Preprocessor):
    def run(self, lines):
        out, fenced = [], False
        for line in lines:
            if FENCE.match(line):
                fenced = not fenced
            elif (not fenced and ITEM.match(line) and out and out[-1].strip()
                  and not ITEM.match(out[-1]) and not out[-1].startswith(("|", "    ", "\t"))
                  and not out[-1].lstrip().startswith(("-", "*", "+"))):
                out.append("")
            out.append(line)
        return out


class ListSpacingExtension(Extension):
    def extendMarkdown(self, md):
        md.preprocessors.register(ListSpacing(md), "docstring_list_spacing", 25)


@event_priority(100)  # before mkdocstrings copies the Markdown extensions for docstrings
def on_config(config):
    config.markdown_extensions.append(ListSpacingExtension())
    return config
