"""docs/reference/config.md is generated from the config dataclasses: it lists every key the
code declares, and it is what scripts/write_config_reference.py writes now."""
import re

from scripts.write_config_reference import REFERENCE, documented_keys, reference


def listed_keys(text: str) -> set:
    """Keys in the page's tables, router options qualified by their router's heading."""
    found, router = set(), None
    for line in text.splitlines():
        heading = re.match(r"### `(\w+)`", line)
        if heading:
            router = heading.group(1)
        elif line.startswith("## "):
            router = None
        row = re.match(r"\| `([\w.]+)` \|", line)
        if row:
            found.add(f"moe.router_options.{router}.{row.group(1)}" if router else row.group(1))
    return found


def test_every_key_in_the_code_is_in_the_reference():
    missing = [key for key in documented_keys() if key not in listed_keys(REFERENCE.read_text(encoding="utf-8"))]
    assert not missing, f"keys missing from {REFERENCE.name}: {missing}; run scripts/write_config_reference.py"


def test_the_reference_is_what_the_code_generates():
    assert REFERENCE.read_text(encoding="utf-8") == reference(), \
        "docs/reference/config.md is stale: run scripts/write_config_reference.py"


def test_a_key_left_out_of_the_page_is_caught():
    text = reference()
    assert "moe.router_options.locmoe.gate" in listed_keys(text)
    cut = "\n".join(line for line in text.splitlines() if not line.startswith("| `gate` |"))
    assert "moe.router_options.locmoe.gate" not in listed_keys(cut)
    assert "train.lr" in listed_keys(text)
