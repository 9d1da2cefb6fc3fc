"""The reference client's own test suite, run against this package.

The reference igwn-alert 0.7.0 wheel on PyPI ships ``igwn_alert/tests/conftest.py`` and
``igwn_alert/tests/test_igwn_alert.py``. They patch ``igwn_alert.client.client.open``,
``hop.auth`` and ``hop.list_topics`` exactly as downstream test suites do, so they are a
good check that code written against the reference runs unchanged here.

The wheel is fetched at test time (``pip download``, cached in ``<repo>/.cache/``, which
git ignores); nothing of it is copied into this repository. Only those two files are
extracted, into a temporary directory, and pytest runs them in a subprocess that imports
*this* igwn_alert. Two tests are deselected because they assert reference bugs that the
contract fixes:

* ``test_version`` asserts ``__version__ == '0.7.0'`` (this release is 1.0 or later);
* ``test_disconnect_topic_string[None]`` asserts that ``disconnect()`` leaves ``sessions``
  non-empty (contract section 5, Better here: it empties them).

The reference tests write ``/tmp/auth.toml`` and move ``~/.netrc`` aside for a while; the
subprocess gets a temporary HOME, so the real home directory is never touched.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import igwn_alert

REPO_ROOT = Path(__file__).resolve().parents[2]
WHEEL_CACHE = REPO_ROOT / ".cache" / "reference-wheel"
REQUIREMENT = "igwn-alert==0.7.0"
WHEEL_NAME = "igwn_alert-0.7.0-py2.py3-none-any.whl"
WHEEL_SHA256 = "5f2a0d7541242dad33686923c3339758a2ce3cdd293893266468f9b864122350"
MEMBERS = {
    "igwn_alert/tests/conftest.py": "conftest.py",
    "igwn_alert/tests/test_igwn_alert.py": "test_igwn_alert.py",
}
DESELECTED = [
    "test_igwn_alert.py::test_version",
    "test_igwn_alert.py::test_disconnect_topic_string[None]",
]
EXPECTED_PASSED = 44


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference_wheel() -> Path:
    """Return the cached reference wheel, downloading it with pip if needed."""
    wheel = WHEEL_CACHE / WHEEL_NAME
    if wheel.exists() and _sha256(wheel) == WHEEL_SHA256:
        return wheel
    if wheel.exists():
        wheel.unlink()  # a damaged or foreign file: fetch it again
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    download = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            REQUIREMENT,
            "-d",
            str(WHEEL_CACHE),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert download.returncode == 0, (
        f"pip download {REQUIREMENT} failed (status {download.returncode}):\n"
        f"{download.stdout}\n{download.stderr}"
    )
    assert wheel.exists(), f"pip did not leave {WHEEL_NAME} in {WHEEL_CACHE}"
    assert _sha256(wheel) == WHEEL_SHA256, f"{wheel} does not have the expected sha256"
    return wheel


def extract_reference_tests(wheel: Path, target: Path) -> Path:
    """Extract only the reference's conftest.py and test_igwn_alert.py into ``target``."""
    target.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as zf:
        for member, name in MEMBERS.items():
            (target / name).write_bytes(zf.read(member))
    # an ini file here makes this directory pytest's rootdir, away from any project config
    (target / "pytest.ini").write_text("[pytest]\n")
    return target


def subprocess_env(home: Path) -> dict[str, str]:
    """The environment of the subprocess: our package first, a throw-away HOME."""
    env = dict(os.environ)
    package_root = str(Path(igwn_alert.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    home.mkdir(parents=True)
    env["HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    for name in ("NETRC", "PYTEST_ADDOPTS", "PYTEST_PLUGINS"):
        env.pop(name, None)
    return env


def _count(summary: str, word: str) -> int:
    match = re.search(rf"(\d+) {word}", summary)
    return int(match.group(1)) if match else 0


def test_reference_suite_passes_against_this_package(tmp_path):
    wheel = reference_wheel()
    tests_dir = extract_reference_tests(wheel, tmp_path / "reference-tests")
    assert sorted(p.name for p in tests_dir.iterdir()) == [
        "conftest.py",
        "pytest.ini",
        "test_igwn_alert.py",
    ]
    env = subprocess_env(tmp_path / "home")

    # the subprocess must import OUR igwn_alert, not a reference installed elsewhere
    which = subprocess.run(
        [
            sys.executable,
            "-c",
            "import igwn_alert; print(igwn_alert.__version__); print(igwn_alert.__file__)",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tests_dir,
        timeout=120,
    )
    assert which.returncode == 0, which.stderr
    version, location = which.stdout.strip().splitlines()[-2:]
    major, minor = (int(part) for part in version.split(".")[:2])
    assert (major, minor) >= (1, 0), f"the subprocess imports igwn_alert {version}"
    assert Path(location).resolve() == Path(igwn_alert.__file__).resolve()

    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
    for nodeid in DESELECTED:
        args += ["--deselect", nodeid]
    args += ["-q", "-rfE", "test_igwn_alert.py"]
    run = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tests_dir, timeout=600)
    report = f"status {run.returncode}\n{run.stdout}\n{run.stderr}"
    summary_lines = [
        line for line in run.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)
    ]
    assert summary_lines, report
    summary = summary_lines[-1]
    assert run.returncode == 0, report
    assert _count(summary, "failed") == 0, report
    assert _count(summary, "error") == 0, report
    assert _count(summary, "passed") == EXPECTED_PASSED, report
    assert _count(summary, "deselected") == len(DESELECTED), report
    # the real home directory was not used
    assert not (Path(env["HOME"]) / ".netrc.testsave").exists()
