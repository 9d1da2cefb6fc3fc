"""The randomized fault soak (``soak/faults.py``, issue 9), with a budget short enough for CI.

One schedule on a private single-node broker: every kind of fault once, in a random order
(broker SIGKILL + restart, listener SIGKILL + restart, a member joining, one leaving, a
publish burst, callbacks raising fatal / non-fatal / plain exceptions), over a steady
stream of alerts. The seed is printed; ``IGWN_ALERT_SOAK_SEED=N`` replays it (and so does
``scripts/soak faults --seed N --schedules 1``). The full soak is ``scripts/soak faults``.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from soak import faults  # noqa: E402 - after the repository root is importable

pytestmark = pytest.mark.timeout(300)


def test_fault_soak_loses_no_acknowledged_alert(tmp_path: Path) -> None:
    seed = int(os.environ.get("IGWN_ALERT_SOAK_SEED") or random.randrange(1, 10**6))
    print(f"\nfault soak seed {seed} (replay: IGWN_ALERT_SOAK_SEED={seed})")
    opts = faults.Options(
        budget=90,
        seed=seed,
        schedules=1,
        events=len(faults.WEIGHTS),
        rate=15,
        drain=45,
        heap="320m",
        workdir=tmp_path / "soak",
        keep=True,
    )
    results = faults.run(opts)
    assert len(results) == 1
    res = results[0]
    t = res.tally
    assert t.acked > 100, f"too little traffic to judge: {t}"
    lost = [(a.uid, a.partition, a.offset, a.fault) for a in t.lost_alerts[:10]]
    assert t.lost == 0, f"seed {seed}: {t.lost} acknowledged alert(s) lost, e.g. {lost}"
    hangs = [i.render(0) for i in res.incidents if i.what.startswith("HANG")]
    assert not hangs, f"seed {seed}: a listener did not stop after SIGTERM: {hangs}"
