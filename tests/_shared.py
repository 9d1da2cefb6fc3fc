"""Helpers that unit and integration tests both use (``from _shared import Run``).

``tests/conftest.py`` puts this folder on ``sys.path``. Nothing here touches a broker: the
integration helpers are in ``tests/integration/_helpers.py``.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any, Optional


class Run:
    """``client.listen(callback, topic, **kwargs)`` in a daemon thread, started at once.

    Parameters
    ----------
    client : object
        A client with ``listen``, ``stop`` and ``listening``: an ``igwn_alert.client`` or an
        ``igwn_alert.testing.InMemoryClient``.
    callback : callable
        The callback given to ``listen()``.
    topic : object
        What ``listen()`` is given as its topic (a short name or a list of them).
    quiet : bool, optional
        Silence warnings in the listening thread (raw bytes warn "not valid json"). With
        False the thread leaves the warning filters alone.
    **kwargs
        Further arguments of ``listen()``.

    Attributes
    ----------
    thread : threading.Thread
        The listening thread.
    error : BaseException or None
        What ``listen()`` raised.
    ended : float or None
        When ``listen()`` returned or raised (``time.monotonic()``).
    """

    def __init__(
        self, client: Any, callback: Any, topic: Any, *, quiet: bool = True, **kwargs: Any
    ) -> None:
        self.client = client
        self.quiet = quiet
        self.error: Optional[BaseException] = None
        self.ended: Optional[float] = None
        self.thread = threading.Thread(
            target=self._run, args=(callback, topic), kwargs=kwargs, daemon=True
        )
        self.thread.start()

    def _run(self, callback: Any, topic: Any, **kwargs: Any) -> None:
        try:
            if self.quiet:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.client.listen(callback, topic, **kwargs)
            else:
                self.client.listen(callback, topic, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc
        self.ended = time.monotonic()

    def ready(self, timeout: float = 20.0) -> None:
        """Wait until the listener is positioned (``client.listening``).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait before the test fails.
        """
        deadline = time.monotonic() + timeout
        while not self.client.listening.wait(0.05):
            assert self.thread.is_alive(), f"listen() ended early: {self.error!r}"
            assert time.monotonic() < deadline, "listen() not positioned in time"

    def stop(self, timeout: float = 30.0) -> float:
        """``client.stop()`` and wait for ``listen()`` to return.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the thread before the test fails.

        Returns
        -------
        float
            Seconds from ``stop()`` until ``listen()`` returned (negative when it had
            returned already).
        """
        start = time.monotonic()
        self.client.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"listen() still running {timeout} s after stop()"
        assert self.ended is not None
        return self.ended - start
