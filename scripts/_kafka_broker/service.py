"""The one shared single-node broker behind ``scripts/kafka up|down|status|logs``.

Its description lives in ``.cache/kafka/state.json`` (mode 0600: it holds the
admin password), so the CLI, the pytest fixtures and the benchmarks all find
the same broker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Optional

from .broker import (
    CACHE_DIR,
    SINGLE_DIR,
    SINGLE_LOG,
    STATE_FILE,
    BrokerError,
    KafkaCluster,
    Log,
    _stderr,
    file_lock,
    pid_alive,
    pids_using_config,
    start_cluster,
)

LOCK_FILE = CACHE_DIR / "broker.lock"


def running_broker(state_file: Path = STATE_FILE) -> Optional[KafkaCluster]:
    """The broker described by the state file, if its process still runs."""
    if not state_file.exists():
        return None
    try:
        cluster = KafkaCluster.from_state(state_file)
    except (ValueError, KeyError, OSError):
        return None
    if all(n.is_running() for n in cluster.nodes):
        return cluster
    return None


def _kill_leftovers(config: Path, log: Log) -> None:
    """Stop processes still using our server.properties (e.g. a lost state file)."""
    for pid in pids_using_config(config):
        log(f"kafka: stopping leftover broker pid {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def ensure_broker(timeout: float = 180.0, log: Log = _stderr) -> tuple[KafkaCluster, bool]:
    """Return the running shared broker, starting a fresh one if there is none.

    The second item tells whether this call started it. A fresh broker gets new
    free ports, a new cluster id and a new random admin password.
    """
    from .admin import warm_up

    with file_lock(LOCK_FILE):
        cluster = running_broker()
        if cluster is not None:
            cluster.wait_ready(timeout=timeout)
            return cluster, False
        _kill_leftovers(SINGLE_DIR / "node-1" / "server.properties", log)
        STATE_FILE.unlink(missing_ok=True)
        if SINGLE_LOG.exists():
            SINGLE_LOG.replace(SINGLE_LOG.with_suffix(".log.1"))
        cluster = start_cluster(
            1, SINGLE_DIR, sasl=True, detach=True, state_file=STATE_FILE, timeout=timeout, log=log
        )
        try:
            warm_up(cluster.bootstrap)
        except BaseException:
            cluster.stop()
            STATE_FILE.unlink(missing_ok=True)
            raise
        return cluster, True


def stop_broker(timeout: float = 30.0, log: Log = _stderr) -> bool:
    """Stop the shared broker (SIGTERM, SIGKILL after ``timeout``); True if one ran."""
    with file_lock(LOCK_FILE):
        was_running = False
        if STATE_FILE.exists():
            try:
                cluster = KafkaCluster.from_state(STATE_FILE)
            except (ValueError, KeyError, OSError) as exc:
                log(f"kafka: ignoring unreadable {STATE_FILE}: {exc}")
            else:
                was_running = any(n.is_running() for n in cluster.nodes)
                cluster.stop(timeout)
                if cluster.running_nodes():
                    raise BrokerError(f"broker still running after stop: {cluster.info()}")
        _kill_leftovers(SINGLE_DIR / "node-1" / "server.properties", log)
        STATE_FILE.unlink(missing_ok=True)
        shutil.rmtree(SINGLE_DIR / "node-1" / "data", ignore_errors=True)
        return was_running
