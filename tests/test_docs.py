"""The examples of README.md, DATASETS.md and docs/*.md run, and the pages' links resolve.

Every fenced code block of those pages carries a mark: an HTML comment on the line before its fence
(other comments, such as ``<!-- test-command -->``, may stand between)::

    <!-- example: cpu -->                runs as written on a CPU in seconds (the default suite)
    <!-- example: slow (why) -->         runs as written but takes minutes (``pytest -m slow``)
    <!-- example: gpu -->                needs CUDA: not run
    <!-- example: no-run (why) -->       not runnable here: not run

A mark may add ``fast: `COMMAND``` : the default suite runs that cheaper shell command in place of a
``slow``, ``gpu`` or ``no-run`` block, so that what later examples read exists.

The pages run one after another in one temporary folder (README first), each block in page order,
so later examples see what earlier ones made. Shell blocks run through bash with the repository's
``.venv/bin`` first on PATH (leading ``python3 -m venv``, ``. .venv/bin/activate`` and ``pip install``
commands are left out: the suite runs inside that environment); Python blocks run with this
interpreter. ``HOME`` and ``HF_HOME`` lie in the temporary folder, and ``$LQV_D4RL_HUB_ENDPOINT``
points at the loopback Hub of ``tests/hub_server.py``, so the Hub examples run without the network.

Checked without running anything: every block is marked, every option of every ``lqv-d4rl``
command in a code block, an inline code span or a ``fast:`` stand-in exists (with its choices), and
every relative link between the pages resolves, ``#anchors`` included. docs/development.md
describes all of this for readers.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[1]
FIRST_PAGES = ("README.md", "DATASETS.md", "docs/usage.md", "docs/algorithms.md",
               "docs/leaderboard.md")
"""Pages that run first, in this order; every other docs/*.md page follows, alphabetically."""

MARKS = ("cpu", "slow", "gpu", "no-run")
SHELL = ("bash", "sh", "shell", "console")
PYTHON = ("python", "py", "python3")
SETUP_STEP = re.compile(r"^(python3? -m venv\b.*|\. \.venv/bin/activate|source \.venv/bin/activate"
                        r"|pip install\b.*)$")
TIMEOUT = {"cpu": 600, "slow": 3600}


def pages() -> list[str]:
    docs = sorted(str(path.relative_to(REPO)) for path in (REPO / "docs").glob("*.md"))
    return [*FIRST_PAGES, *(page for page in docs if page not in FIRST_PAGES)]


@dataclass
class Block:
    page: str
    line: int          # 1-based line of the opening fence
    language: str
    code: str
    mark: str | None   # cpu, slow, gpu, no-run, or None (unmarked)
    comment: str       # the mark's whole comment
    fast: str | None   # the stand-in command of the default suite

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
MARK = re.compile(r"<!--\s*example:\s*([\w-]+)(.*?)-->")
FAST = re.compile(r"fast:\s*`([^`]+)`")


def read_blocks(page: str) -> list[Block]:
    lines = (REPO / page).read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence, language = opening.groups()
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        mark = comment = fast = None
        above = index - 1
        while above >= 0 and lines[above].strip().startswith("<!--") and lines[above].strip().endswith("-->"):
            found = MARK.search(lines[above])
            if found:
                mark, comment = found.group(1), found.group(0)
                stand_in = FAST.search(found.group(2))
                fast = stand_in.group(1) if stand_in else None
            above -= 1
        blocks.append(Block(page, index + 1, language.lower(), "\n".join(lines[index + 1:end]) + "\n",
                            mark, comment or "", fast))
        index = end + 1
    return blocks


# ------------------------------------------------------------------------------------ static checks


def test_every_code_block_is_marked():
    problems = []
    for page in pages():
        for block in read_blocks(page):
            if block.mark not in MARKS:
                problems.append(f"{block.where}: no example mark (<!-- example: cpu|slow|gpu|no-run "
                                f"(why) --> on the line before the fence)" if block.mark is None else
                                f"{block.where}: unknown mark {block.mark!r}")
            elif block.mark in ("cpu", "slow") and block.language not in SHELL + PYTHON:
                problems.append(f"{block.where}: a {block.mark} example must be bash or python, "
                                f"not {block.language or 'an unlabelled block'}")
            elif block.mark in ("slow", "no-run") and "(" not in block.comment:
                problems.append(f"{block.where}: say why in the mark, e.g. '{block.mark} (hours)'")
            elif block.fast and block.mark == "cpu":
                problems.append(f"{block.where}: a cpu example runs as written; fast: is for the others")
    assert not problems, "\n".join(problems)


def test_readme_starts_with_the_two_commands_and_ci_finds_the_test_command():
    blocks = read_blocks("README.md")
    first, second = blocks[0], blocks[1]
    assert "pip install -e . && lqv-d4rl generate" in first.code
    assert second.code.strip().endswith("python -m pytest -q -n 2")
    # the line .ci/run executes: the awk program it uses, on the README
    script = (REPO / ".ci" / "run").read_text()
    awk = re.search(r"awk '([^']+)' README\.md", script).group(1)
    command = subprocess.run(["awk", awk, "README.md"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
    assert command == second.code.strip()


def _commands_in(text: str) -> list[list[str]]:
    """The ``lqv-d4rl`` invocations of shell text, as token lists (comments and continuations out)."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        try:
            tokens = list(lexer)
        except ValueError:
            tokens = line.split()
        command: list[str] = []
        for token in [*tokens, ";"]:
            if token in ("&&", "||", ";", "|", "do", "done", "then", "fi"):
                if command:
                    commands.append(command)
                command = []
            elif command or token == "lqv-d4rl":
                command.append(token)
    return commands


def _inline_commands(page: str) -> list[list[str]]:
    text = (REPO / page).read_text(encoding="utf-8")
    text = re.sub(r"^\s*(`{3,}|~{3,}).*?^\s*\1", "", text, flags=re.S | re.M)  # fenced blocks
    text = text.replace("\n", " ")
    spans = re.findall(r"(?<!`)`(lqv-d4rl [^`]+)`(?!`)", text)
    commands = []
    for span in spans:
        for part in re.split(r"\s*(?:&&|;|\|\|)\s*", span):
            if part.startswith("lqv-d4rl "):
                commands.append(part.replace("[", " ").replace("]", " ").split())
    return commands


def _resolve(tokens: list[str]):
    """The click command of ``lqv-d4rl VERB [ALGO] ...`` and the tokens after its name (or None)."""
    from lqv_d4rl.cli import main

    context = click.Context(main)
    words = [token for token in tokens[1:]]
    if not words or words[0].startswith("-"):
        return main, words
    command = main.get_command(context, words[0])
    if command is None:
        raise AssertionError(f"unknown verb {words[0]!r}")
    rest = words[1:]
    if isinstance(command, click.Group):
        if rest and not rest[0].startswith("-"):
            if rest[0].isupper() or rest[0] == "...":  # a placeholder: ALGO
                return None, rest
            sub = command.get_command(click.Context(command, parent=context), rest[0])
            if sub is None:
                raise AssertionError(f"unknown {words[0]} command {rest[0]!r}")
            return sub, rest[1:]
    return command, rest


def _check_options(command: click.Command, words: list[str]) -> list[str]:
    problems = []
    params = {name: param for param in command.params if isinstance(param, click.Option)
              for name in (*param.opts, *param.secondary_opts)}
    for position, word in enumerate(words):
        if not word.startswith("--") and word != "-h":
            continue
        name, _, value = word.partition("=")
        if name in ("--help", "-h"):
            continue
        if name not in params:
            problems.append(f"{command.name} has no option {name}")
            continue
        if params[name].hidden:
            problems.append(f"{command.name} {name} is a hidden (deprecated) name: use the one "
                            f"`lqv-d4rl {command.name} --help` shows")
            continue
        param = params[name]
        if isinstance(param.type, click.Choice) and not param.is_flag:
            if not value and position + 1 < len(words):
                value = words[position + 1]
            for choice in value.split("|"):
                if choice and not choice.isupper() and choice not in param.type.choices:
                    problems.append(f"{command.name} {name}: {choice!r} is not one of "
                                    f"{', '.join(param.type.choices)}")
    return problems


def test_every_cli_option_in_the_docs_exists():
    found = []  # (where, tokens)
    for page in pages():
        for block in read_blocks(page):
            texts = [block.code] if block.language in SHELL else []
            texts += [block.fast] if block.fast else []
            found += [(block.where, command) for text in texts for command in _commands_in(text)]
        found += [(f"{page} (inline code)", command) for command in _inline_commands(page)]
    assert len(found) > 20, "the parser found too few commands"
    problems = []
    for where, tokens in found:
        try:
            command, words = _resolve(tokens)
        except AssertionError as err:
            problems.append(f"{where}: {' '.join(tokens)}: {err}")
            continue
        if command is not None:
            problems += [f"{where}: {' '.join(tokens)}: {problem}"
                         for problem in _check_options(command, words)]
    assert not problems, "\n".join(problems)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation out, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^\s*(`{3,}|~{3,}).*?^\s*\1", "", path.read_text(encoding="utf-8"),
                  flags=re.S | re.M)
    seen: dict[str, int] = {}
    result = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, flags=re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def test_relative_links_resolve():
    problems = []
    for page in pages():
        path = REPO / page
        text = re.sub(r"^\s*(`{3,}|~{3,}).*?^\s*\1", "", path.read_text(encoding="utf-8"),
                      flags=re.S | re.M)
        text = re.sub(r"`[^`\n]*`", "", text)  # inline code
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                problems.append(f"{page}: link to {target}: {linked} does not exist")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"{page}: link to {target}: no heading with anchor #{anchor} in "
                                f"{linked.relative_to(REPO)}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------ running


def _without_setup(code: str) -> str:
    lines = []
    for line in code.splitlines():
        steps = [step.strip() for step in line.split(" && ")]
        while steps and SETUP_STEP.match(steps[0]):
            steps.pop(0)
        if steps:
            lines.append(" && ".join(steps))
    return "\n".join(lines) + "\n"


class Workspace:
    """One temporary folder in which the pages' examples run, in order, each page once."""

    def __init__(self, folder: Path, mode: str, hub_url: str):
        self.folder, self.mode, self.done = folder, mode, []
        home = folder / ".home"
        home.mkdir(parents=True, exist_ok=True)
        venv_bin = REPO / ".venv" / "bin"
        path = [str(venv_bin)] if venv_bin.is_dir() else []
        path += [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
        self.env = {key: value for key, value in os.environ.items()
                    if key not in ("LQV_D4RL_ROOT", "LQV_D4RL_HUB_REPO", "HF_ENDPOINT",
                                   "HF_HUB_OFFLINE", "PYTEST_CURRENT_TEST")}
        self.env.update(PATH=os.pathsep.join(path), HOME=str(home), HF_HOME=str(home / "hf"),
                        HF_TOKEN="lqv-test-token", HF_HUB_DISABLE_TELEMETRY="1",
                        LQV_D4RL_HUB_ENDPOINT=hub_url, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"),
                        MPLBACKEND="Agg")

    def run_through(self, page: str):
        """Run every page up to and including ``page`` that has not run yet."""
        for earlier in pages()[:pages().index(page) + 1]:
            if earlier not in self.done:
                self.done.append(earlier)  # once, even if it fails: later pages report their own
                for block in read_blocks(earlier):
                    self.run(block)

    def run(self, block: Block):
        if block.mark == "cpu" or (block.mark == "slow" and self.mode == "slow"):
            language, code = ("python" if block.language in PYTHON else "bash"), block.code
        elif block.fast and self.mode == "fast":
            language, code = "bash", block.fast + "\n"
        else:
            return
        if language == "python":
            script = self.folder / ".example.py"
            script.write_text(code, encoding="utf-8")
            argv = [sys.executable, str(script)]
        else:
            argv = ["bash", "-e", "-o", "pipefail", "-c", _without_setup(code)]
        try:
            result = subprocess.run(argv, cwd=self.folder, env=self.env, stdin=subprocess.DEVNULL,
                                    capture_output=True, text=True,
                                    timeout=TIMEOUT["slow" if block.mark == "slow" else "cpu"])
        except subprocess.TimeoutExpired as err:
            pytest.fail(f"{block.where}: the example ran past {err.timeout} s:\n{code}")
        if result.returncode != 0:
            output = (result.stdout + result.stderr).replace("\r", "\n")
            tail = "\n".join(line for line in output.splitlines() if line.strip())[-4000:]
            pytest.fail(f"{block.where}: the example exited with {result.returncode}:\n{code}\n"
                        f"--- output (end) ---\n{tail}")


@pytest.fixture(scope="module")
def hub_url():
    sys.path.insert(0, str(Path(__file__).parent))
    from hub_server import HubServer

    server = HubServer().start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def fast_workspace(tmp_path_factory, hub_url):
    return Workspace(tmp_path_factory.mktemp("docs-examples"), "fast", hub_url)


@pytest.mark.parametrize("page", pages())
def test_examples_run(page, fast_workspace):
    """The page's cpu examples (and fast stand-ins), after those of the pages before it."""
    fast_workspace.run_through(page)


@pytest.mark.slow
def test_examples_run_as_written(tmp_path, hub_url):
    """Every cpu and slow example of every page, as written (the README's quickstart included)."""
    workspace = Workspace(tmp_path, "slow", hub_url)
    workspace.run_through(pages()[-1])
