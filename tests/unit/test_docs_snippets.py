"""The Python examples of the documentation run, as written.

Every ``.. code-block:: python`` of every page under ``docs/`` is run, page by page, in
order, in one namespace per page (as a reader runs them in one session):

* a block whose first line is ``# some/path.py`` is a file of the reader's project: it
  is written under a temporary project directory (on ``sys.path``), not run;
* a block that defines ``test_...`` functions is a test: the page's test blocks are
  written as test files and run by an inner pytest (the plugin's fixtures included);
* any other block is executed, with ``__name__ == "__main__"``, in the temporary project
  directory, with :class:`igwn_alert.testing.InMemoryClient` in place of
  ``igwn_alert.client`` and GraceDB's demonstration alerts waiting on its bus (for the
  groups ``gracedb`` and ``gracedb-playground``), so that ``listen()`` delivers them and
  returns. Blocks that build a :class:`~igwn_alert.testing.LocalBroker` run on the real
  embedded broker.

A block preceded by the comment ``.. snippet: not run (reason)`` is left out, and the
reason is listed when the test runs.
"""

from __future__ import annotations

import re
import signal
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import igwn_alert

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parents[2] / "docs"
NOT_RUN = re.compile(r"^\.\. snippet: not run \((.+)\)\s*$")
PATH_HEADER = re.compile(r"^# ([\w/.-]+\.py)\s*$")

# Pages being rewritten by others (issue 12's brief): their fragments use names defined
# only in the prose. Remove a page from here once its blocks run.
PENDING_PAGES: set[str] = set()


@dataclass
class Snippet:
    page: str
    line: int
    code: str
    skip_reason: str = ""

    @property
    def path(self) -> str:
        first = self.code.splitlines()[0] if self.code.strip() else ""
        match = PATH_HEADER.match(first)
        return match.group(1) if match else ""

    @property
    def is_test(self) -> bool:
        return re.search(r"^def test_\w+\(", self.code, re.M) is not None


def snippets(page: Path) -> list[Snippet]:
    """The Python code blocks of one page, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Snippet] = []
    i = 0
    while i < len(lines):
        if re.match(r"^\s*\.\. code(-block)?:: python3?\s*$", lines[i]):
            indent = len(lines[i]) - len(lines[i].lstrip())
            previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            reason = NOT_RUN.match(previous.strip())
            start = i + 1
            j = start
            while j < len(lines) and re.match(r"^\s+:[\w-]+:", lines[j]):  # options
                j += 1
            body: list[str] = []
            while j < len(lines):
                line = lines[j]
                if line.strip() and len(line) - len(line.lstrip()) <= indent:
                    break
                body.append(line)
                j += 1
            code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
            found.append(
                Snippet(str(page.relative_to(DOCS)), start, code, reason.group(1) if reason else "")
            )
            i = j
        else:
            i += 1
    return found


PAGES = sorted(
    p.relative_to(DOCS).as_posix()
    for p in DOCS.rglob("*.rst")
    if "_build" not in p.parts and snippets(p)
)


def test_the_docs_have_python_examples() -> None:
    assert len(PAGES) >= 5, PAGES
    assert "recipes.rst" in PAGES and "quickstart.rst" in PAGES


def test_examples_not_run_say_why() -> None:
    """The list of examples left out, printed so that CI's log shows it."""
    left_out = [
        f"{s.page}:{s.line}: {s.skip_reason}"
        for p in PAGES
        for s in snippets(DOCS / p)
        if s.skip_reason
    ]
    print("\n".join(["", *[f"not run: {x}" for x in left_out]]))
    assert all(x.split(": ", 1)[1].strip() for x in left_out)


@pytest.mark.parametrize(
    "page",
    [
        p
        for p in PAGES
        if p not in PENDING_PAGES and any(not s.skip_reason for s in snippets(DOCS / p))
    ],
)
def test_page_examples_run(
    page: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pytester: pytest.Pytester,
) -> None:
    from igwn_alert.testing import InMemoryClient, demo_alerts, use_broker

    blocks = snippets(DOCS / page)
    run = [b for b in blocks if not b.skip_reason]
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.setattr(igwn_alert, "client", InMemoryClient)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    tests: list[Snippet] = []
    try:
        with use_broker() as bus:
            for group in ("gracedb", "gracedb-playground"):
                for alert in demo_alerts():
                    bus.inject(alert.topic, alert.text, group=group)
            namespace: dict[str, object] = {"__name__": "__main__"}
            for block in run:
                if block.path:
                    target = project / block.path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    for parent in target.relative_to(project).parents:
                        init = project / parent / "__init__.py"
                        if parent != Path(".") and not init.exists():
                            init.write_text("")
                    target.write_text(block.code)
                    continue
                if block.is_test:
                    tests.append(block)
                    continue
                where = f"{DOCS / page}:{block.line}"
                exec(compile(block.code, where, "exec"), namespace)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for name in [m for m in sys.modules if m.split(".")[0] in _project_packages(project)]:
            del sys.modules[name]
    if tests:
        _run_tests(page, tests, project, pytester, monkeypatch)


def _project_packages(project: Path) -> set[str]:
    return {p.stem for p in project.iterdir() if p.suffix == ".py" or p.is_dir()}


def _run_tests(
    page: str,
    tests: list[Snippet],
    project: Path,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run the page's test blocks with an inner pytest in the reader's project (the
    current directory)."""
    count = 0
    for n, block in enumerate(tests):
        name = f"test_docs_{Path(page).stem}_{n}.py"
        (project / name).write_text(f"# {page}:{block.line}\n{block.code}")
    for test_file in project.rglob("test_*.py"):
        count += len(re.findall(r"^def test_\w+\(", test_file.read_text(), re.M))
    src = str(Path(igwn_alert.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", f"{src}:{project}")
    result = pytester.runpytest_subprocess(str(project), "-p", "no:cacheprovider", "-q")
    assert result.ret == 0, "\n".join(result.outlines[-40:])
    result.assert_outcomes(passed=count)
