"""The demo: packaged alerts, published and printed through the embedded broker."""

from __future__ import annotations

import io
import json
import re
import sys
import time
from typing import Any

import pytest

from igwn_alert.testing import _demo as demo
from igwn_alert.testing._demo import DEMO_GROUP, DemoError, demo_alerts, run_demo


def test_demo_alerts_are_realistic() -> None:
    alerts = demo_alerts()
    assert 5 <= len(alerts) <= 8
    assert [a.topic for a in alerts] == [
        "cbc_gstlal",
        "superevent",
        "superevent",
        "superevent",
        "superevent",
        "superevent",
        "cbc_gstlal",
    ]
    kinds = [(a.alert["alert_type"], a.alert["uid"]) for a in alerts]
    assert kinds[0] == ("new", "M123456")
    assert kinds[1] == ("new", "MS250101a")
    assert ("label_added", "MS250101a") in kinds
    assert ("update", "MS250101a") in kinds
    labels = [a.alert["data"]["name"] for a in alerts if a.alert["alert_type"] == "label_added"]
    assert labels == ["EM_READY", "ADVOK"]
    for alert in alerts:
        assert isinstance(alert.text, str)
        assert json.loads(alert.text) == alert.alert
        assert "\n" not in alert.text  # compact, as GraceDB sends it
        assert 500 < len(alert.text) < 4000
        assert alert.alert["object"]  # every alert carries its object, as GraceDB's do
        assert alert.name.split("-")[1] == alert.topic


def test_run_demo_prints_what_listen_prints() -> None:
    out = io.StringIO()
    start = time.monotonic()
    run_demo(out, timeout=30)
    elapsed = time.monotonic() - start
    assert elapsed < 30
    lines = out.getvalue().splitlines()
    alerts = demo_alerts()
    assert re.fullmatch(
        r"igwn-alert demo: embedded broker at kafka://127\.0\.0\.1:\d+; publishing 7 GraceDB "
        rf"alerts to group {DEMO_GROUP} and listening to them",
        lines[0],
    )
    body = lines[1:-1]
    expected: list[str] = []
    for alert in alerts:
        expected += [f"New message from topic {DEMO_GROUP}.{alert.topic}:", alert.text]
    assert body == expected
    assert re.fullmatch(
        r"igwn-alert demo: 7 of 7 alerts received in \d+\.\d s\. Try it live: igwn-alert serve",
        lines[-1],
    )


def test_run_demo_pretty(capsys: pytest.CaptureFixture[str]) -> None:
    run_demo(jsonpp=True)  # to sys.stdout at call time
    out = capsys.readouterr().out
    first = demo_alerts()[0]
    assert json.dumps(first.alert, indent=4) in out
    assert out.count("New message from topic ") == len(demo_alerts())


def test_run_demo_leaves_stdout_alone(capsys: pytest.CaptureFixture[str]) -> None:
    before = sys.stdout
    run_demo(io.StringIO())
    assert sys.stdout is before
    assert capsys.readouterr().out == ""


def test_run_demo_times_out_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listener that prints nothing: the demo fails with a clear error, in time."""
    import igwn_alert

    real = igwn_alert.client

    def silent_client(*args: Any, **kwargs: Any) -> Any:
        made = real(*args, **kwargs)
        listen = made.listen

        def quiet_listen(callback: Any = None, topic: Any = None) -> None:
            listen(lambda topic, payload: None, topic)

        made.listen = quiet_listen
        return made

    monkeypatch.setattr(igwn_alert, "client", silent_client)
    start = time.monotonic()
    with pytest.raises(DemoError, match=r"only 0 of 7 demo alerts arrived within 2 s"):
        run_demo(io.StringIO(), timeout=2)
    assert time.monotonic() - start < 10


def test_run_demo_reports_a_failing_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    import igwn_alert

    real = igwn_alert.client

    def broken_client(*args: Any, **kwargs: Any) -> Any:
        made = real(*args, **kwargs)

        def broken_listen(callback: Any = None, topic: Any = None) -> None:
            raise OSError("no listening today")

        made.listen = broken_listen
        return made

    monkeypatch.setattr(igwn_alert, "client", broken_client)
    with pytest.raises(DemoError, match="no listening today"):
        run_demo(io.StringIO(), timeout=5)


def test_alert_counter_counts_line_starts() -> None:
    target = io.StringIO()
    counter = demo._AlertCounter(target)
    counter.write("New message from topic a:\n{}")
    counter.write("\n")
    counter.write("text New message from topic b: is not a header\n")
    counter.write("New message from topic c:\nNew message from topic d:\n")
    assert counter.count == 3
    assert target.getvalue().count("New message") == 4


class ClosingStream(io.StringIO):
    """A stream whose reader goes away after the first line (``igwn-alert demo | head -1``)."""

    def write(self, text: str) -> int:
        if self.getvalue():
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_run_demo_closed_output_is_a_broken_pipe_promptly() -> None:
    start = time.monotonic()
    with pytest.raises(BrokenPipeError):
        run_demo(ClosingStream(), timeout=30)
    assert time.monotonic() - start < 10


def test_run_demo_listener_failing_midway_is_reported_promptly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import igwn_alert

    real = igwn_alert.client

    def failing_client(*args: Any, **kwargs: Any) -> Any:
        made = real(*args, **kwargs)
        listen = made.listen

        def failing_listen(callback: Any = None, topic: Any = None) -> None:
            def once(topic: str, payload: Any) -> None:
                raise ValueError("bad alert")

            listen(once, topic)

        made.listen = failing_listen
        return made

    monkeypatch.setattr(igwn_alert, "client", failing_client)
    start = time.monotonic()
    with pytest.raises(DemoError, match="bad alert"):
        run_demo(io.StringIO(), timeout=30)
    assert time.monotonic() - start < 10


def test_run_demo_on_the_config_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without librdkafka's C API (4 partitions per topic), the order is still GraceDB's."""
    from igwn_alert.testing import _embedded_broker as embedded_broker

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise embedded_broker.EmbeddedBrokerError("no C API here")

    monkeypatch.setattr(embedded_broker, "_NativeCluster", unavailable)
    out = io.StringIO()
    run_demo(out, timeout=30)
    headers = [line for line in out.getvalue().splitlines() if line.startswith("New message")]
    assert headers == [f"New message from topic {DEMO_GROUP}.{a.topic}:" for a in demo_alerts()]
    payloads = out.getvalue().splitlines()[2:-1:2]
    assert payloads == [a.text for a in demo_alerts()]
