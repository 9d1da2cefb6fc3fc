"""Start-up cost of the ``igwn-alert`` command and of the pytest plugin, side by side.

    python bench/startup.py            # 15 runs of each, medians
    python bench/startup.py -n 30

Rows (each a fresh interpreter, wall-clock time until it exits):

* ``python -c pass``: the interpreter alone, the floor under everything else;
* ``igwn-alert -V`` and ``python -m igwn_alert -V``: the command line's start-up (it
  imports the client, hence hop and confluent-kafka, before parsing its arguments);
* a one-test pytest project, with the plugin (auto-loaded by its ``pytest11`` entry
  point, as in any project whose environment has igwn-alert), without it
  (``-p no:igwn_alert``), with the module the entry point used to name
  (``igwn_alert.testing.pytest_plugin``, which imports the package), plus one that
  uses the ``igwn_alert_memory`` fixture, which is when the package is imported.

Ratios and differences are printed, never asserted (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _measure(
    rows: list[tuple[str, list[str]]], cwd: Path, env: dict[str, str], runs: int
) -> dict[str, float]:
    """Median wall-clock seconds of each command, the commands interleaved run by run (so
    that a burst of load on the shared machine lands on every row alike), after a warm-up."""
    samples: dict[str, list[float]] = {label: [] for label, _ in rows}
    for i in range(runs + 1):
        for label, cmd in rows:
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
            if i:
                samples[label].append(time.perf_counter() - t0)
    return {label: statistics.median(values) for label, values in samples.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--runs", type=int, default=15, help="runs of each command")
    opts = p.parse_args()

    py = sys.executable
    script = shutil.which("igwn-alert", path=str(Path(py).parent))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "test_one.py").write_text("def test_one():\n    assert True\n")
        (project / "test_fixture.py").write_text(
            "def test_bus(igwn_alert_memory):\n    assert igwn_alert_memory.topics() == []\n"
        )
        pytest = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        old_plugin = ["-p", "no:igwn_alert", "-p", "igwn_alert.testing.pytest_plugin"]
        rows: list[tuple[str, list[str]]] = [
            ("python -c pass", [py, "-c", "pass"]),
            ("python -m igwn_alert -V", [py, "-m", "igwn_alert", "-V"]),
        ]
        if script:
            rows.append(("igwn-alert -V", [script, "-V"]))
        rows += [
            (
                "pytest, 1 test, plugin off (-p no:igwn_alert)",
                [*pytest, "-p", "no:igwn_alert", "test_one.py"],
            ),
            ("pytest, 1 test, plugin on (entry point)", [*pytest, "test_one.py"]),
            (
                "pytest, 1 test, old entry point (igwn_alert.testing.pytest_plugin)",
                [*pytest, *old_plugin, "test_one.py"],
            ),
            ("pytest, 1 test using igwn_alert_memory", [*pytest, "test_fixture.py"]),
        ]
        results = _measure(rows, project, env, opts.runs)

    width = max(len(label) for label in results)
    floor = results["python -c pass"]
    print(f"{'command':<{width}}  median ms  x python")
    for label, seconds in results.items():
        print(f"{label:<{width}}  {seconds * 1e3:9.0f}  {seconds / floor:8.1f}")
    off = results["pytest, 1 test, plugin off (-p no:igwn_alert)"]
    on = results["pytest, 1 test, plugin on (entry point)"]
    used = results["pytest, 1 test using igwn_alert_memory"]
    old = results["pytest, 1 test, old entry point (igwn_alert.testing.pytest_plugin)"]
    print()
    print(
        f"plugin cost at pytest start-up: {(on - off) * 1e3:+.0f} ms (ratio on/off {on / off:.2f})"
    )
    print(f"old entry point's cost:         {(old - off) * 1e3:+.0f} ms (ratio {old / off:.2f})")
    print(f"first use of a fixture:         {(used - off) * 1e3:+.0f} ms (ratio {used / off:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
