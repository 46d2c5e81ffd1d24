"""README.md is the front page and points into docs/: every relative link and image in it
names a file that exists (mkdocs build --strict checks the links inside docs/, not these)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(text: str):
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target) and not target.startswith("#")]


def test_every_relative_link_of_the_readme_exists():
    links = relative_links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert links, "the README links to no page"
    missing = [target for target in links if not (ROOT / target.split("#")[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_a_missing_target_is_caught():
    assert relative_links("[a](docs/nope.md#x) [b](https://example.org) [c](#top)") == ["docs/nope.md#x"]
