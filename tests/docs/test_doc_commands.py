"""Every shell command the docs show is run by a test or listed as an exception with a reason.

The commands are the lines of the code blocks marked bash, sh, shell or console in README.md
and docs/**/*.md; tests/docs/doc_commands.yaml lists each once (how to list one: its header).
The commands listed with ``run`` run here for real, with tiny settings, in the file's order."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LIST = Path(__file__).with_name("doc_commands.yaml")
SHELLS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w-]*)")
TINY = ("--set train.steps=2 --set train.warmup_steps=1 --set train.eval_every=2 --set train.eval_batches=1 "
        "--set data.max_chars_per_corpus=200000 --set data.cache_dir={tmp}/cache --no-progress")
KINDS = ("run", "tested_by", "not_run")


def shell_blocks(text: str):
    """(language, lines) of each fenced code block whose language is a shell."""
    blocks, open_fence = [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if open_fence is None and match:
            open_fence, language, body = match.group(1), match.group(2), []
        elif open_fence is not None and line.strip().startswith(open_fence):
            if language in SHELLS:
                blocks.append((language, body))
            open_fence = None
        elif open_fence is not None:
            body.append(line)
    return blocks


def uncommented(line: str) -> str:
    """The line without a trailing ``# comment`` outside quotes."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def commands_of(language: str, lines) -> list:
    """The block's commands: continuation lines joined, comments cut, spaces collapsed; in a
    console block only the lines after a ``$`` prompt."""
    commands, pending = [], ""
    for line in lines:
        if language == "console" and not pending:
            if not line.lstrip().startswith("$ "):
                continue
            line = line.lstrip()[2:]
        line = uncommented(line).rstrip() if not line.rstrip().endswith("\\") else line.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = " ".join((pending + line).split())
        pending = ""
        if command:
            commands.append(command)
    return commands


def documented_commands() -> dict:
    """Each shell command of the docs -> the files that show it."""
    found = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for language, lines in shell_blocks(path.read_text(encoding="utf-8")):
            for command in commands_of(language, lines):
                found.setdefault(command, []).append(str(path.relative_to(ROOT)))
    return found


def listed() -> list:
    return yaml.safe_load(LIST.read_text(encoding="utf-8"))


def test_every_documented_command_is_listed_once_with_one_kind():
    entries = listed()
    problems = [f"{entry.get('command')!r}: give exactly one of {', '.join(KINDS)}" for entry in entries
                if sum(kind in entry for kind in KINDS) != 1]
    names = [entry["command"] for entry in entries]
    problems += [f"{name!r} is listed twice" for name in {n for n in names if names.count(n) > 1}]
    documented = documented_commands()
    missing = [f"{command!r} ({', '.join(files)})" for command, files in documented.items() if command not in names]
    stale = [name for name in names if name not in documented]
    message = ""
    if missing:
        message += (f"shell commands in the docs that no test runs and {LIST.relative_to(ROOT)} does not list: "
                    f"{'; '.join(missing)}. Add each to that file, as `- command: <the line as above>` with "
                    "`run: <a cheap variant>`, `tested_by: tests/FILE.py::test_name` or `not_run: <why>`. ")
    if stale:
        message += f"listed in {LIST.relative_to(ROOT)} but in no doc any more (remove them): {stale}. "
    assert not problems and not message, message + "; ".join(problems)


def test_each_tested_by_names_an_existing_test():
    absent = []
    for entry in listed():
        if "tested_by" in entry:
            file, _, name = entry["tested_by"].partition("::")
            source = ROOT / file
            if not (source.is_file() and re.search(rf"^def {re.escape(name)}\(", source.read_text(), re.M)):
                absent.append(entry["tested_by"])
    assert not absent, f"{LIST.relative_to(ROOT)} names tests that do not exist: {absent}"


def test_the_parser_finds_commands_and_skips_the_rest():
    text = ("```bash\n# a comment\nbash a.sh --x 1   # why\npython b.py \\\n    --y \"#2\"\n```\n"
            "```python\nprint(1)\n```\n```console\n$ echo hi\nhi\n```\n")
    assert [c for language, lines in shell_blocks(text) for c in commands_of(language, lines)] == \
        ["bash a.sh --x 1", 'python b.py --y "#2"', "echo hi"]


RUNS = [entry for entry in listed() if "run" in entry]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("doc_commands")


@pytest.mark.parametrize("entry", RUNS, ids=[entry["command"][:60] for entry in RUNS])
def test_documented_command_runs(entry, shared):
    command = entry["run"].replace("{tiny}", TINY).replace("{tmp}", str(shared))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=entry.get("timeout_s", 300))
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{output[-3000:]}"
    assert entry.get("expect", "") in output, f"{command}: no {entry['expect']!r} in\n{output[-3000:]}"
