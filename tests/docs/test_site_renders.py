"""The built documentation site renders in a real browser: headless Chromium (Debian's
package, installed by ``bash scripts/setup_env.sh docs``) opens the home page and the routers
page; each shows the router table with every registered router and a plot, and every image on
it loaded (naturalWidth > 0 after the load event). The site is $MOE_DOCS_SITE (scripts/test.sh
passes the one its ``mkdocs build --strict`` wrote), else built here. Full-page screenshots go to
$MOE_TEST_ARTIFACTS (scripts/test.sh prints where), else pytest's temporary folder."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.browser import chromium_path, headless_page
from tests.support.router_cases import ROUTER_NAMES

ROOT = Path(__file__).resolve().parents[2]
PAGES = {"home": "index.html", "routers": "routers/index.html"}
IMAGES = "[...document.images].map(i => ({src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0}))"
TABLES = "[...document.querySelectorAll('article table')].map(t => [...t.rows].map(r => r.cells[0].innerText.trim()))"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if os.environ.get("MOE_DOCS_SITE"):
        return Path(os.environ["MOE_DOCS_SITE"])
    built = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(built)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return built


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MOE_TEST_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def rendered(site, artifacts):
    """Each page's images and the first column of each table, read by the browser."""
    chromium = chromium_path()
    if chromium is None:
        pytest.skip("Chromium is not installed (bash scripts/setup_env.sh docs installs Debian's chromium)")
    found = {}
    with headless_page(chromium) as page:
        for name, path in PAGES.items():
            assert (site / path).is_file(), f"the built site has no {path} (in {site})"
            page.open((site / path).as_uri())
            found[name] = {"images": page.evaluate(IMAGES), "tables": page.evaluate(TABLES)}
            page.screenshot(artifacts / f"docs_{name}.png")
    return found


@pytest.mark.parametrize("name", PAGES)
def test_page_shows_its_plots_loaded(rendered, name):
    images = rendered[name]["images"]
    assert any(image["src"].endswith(".png") for image in images), f"{PAGES[name]} shows no plot: {images}"
    broken = [image["src"] for image in images if not image["loaded"]]
    assert not broken, f"{PAGES[name]}: images that did not load in Chromium: {broken}"


@pytest.mark.parametrize("name", PAGES)
def test_page_shows_the_router_table(rendered, name):
    tables = [column for column in rendered[name]["tables"] if column and column[0] == "router"]
    assert tables, f"{PAGES[name]} has no table headed 'router': {rendered[name]['tables']}"
    missing = sorted(set(ROUTER_NAMES) - set(tables[0][1:]))
    assert not missing, f"{PAGES[name]}'s router table lacks registered routers: {missing}"


def test_screenshots_were_kept(rendered, artifacts):
    for name in PAGES:
        shot = artifacts / f"docs_{name}.png"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000, shot
