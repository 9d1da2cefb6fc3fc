"""The Prometheus exporter: scraped over HTTP and parsed with prometheus_client's parser.

The client is a real ``igwn_alert.client`` (unauthenticated, never connected); its stats
are fed through the same ListenerStats / PublisherStats calls the listen loop makes.
"""

from __future__ import annotations

import math
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import igwn_alert
from igwn_alert import _metrics


@pytest.fixture
def alert_client() -> igwn_alert.client:
    return igwn_alert.client(noauth=True, server="kafka://127.0.0.1/", port=9, group="grp")


@pytest.fixture
def served(alert_client: igwn_alert.client) -> Iterator[tuple[igwn_alert.client, Any]]:
    server = alert_client.serve_metrics(0, addr="127.0.0.1", max_lag=100)
    try:
        yield alert_client, server
    finally:
        server.close()


def scrape(server: Any, path: str = "/metrics") -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def feed(c: igwn_alert.client) -> float:
    ls, ps = c._listener_stats, c._publisher_stats
    ls.set_state("starting")
    ls.set_state("listening")
    ls.set_partitions([("superevent", 0), ("superevent", 1)])
    ts = int(time.time() * 1000) - 1500
    for _ in range(4):
        ls.alert_done("superevent", ls.alert_started("superevent", 0, ts))
    ls.alert_done("em_bright", ls.alert_started("em_bright", 1, ts))
    ls.alert_started("em_bright", 1, ts)
    ls.error("callback")
    ls.error("transient")
    ls.error("transient")
    ls.reconnect()
    ls.set_lag({("superevent", 0): (10, 13), ("superevent", 1): (5, 5)})
    for _ in range(3):
        ps.written()
    ps.delivered()
    ps.failed()
    return ts / 1000


def test_scrape_parses_with_the_expected_names_and_values(served: Any) -> None:
    c, server = served
    ts = feed(c)
    status, ctype, text = scrape(server)
    assert status == 200
    assert ctype.startswith("text/plain")
    got = samples(text)
    kinds = families(text)
    assert got[("igwn_alert_alerts_total", (("topic", "superevent"),))] == 4
    assert got[("igwn_alert_alerts_total", (("topic", "em_bright"),))] == 1
    assert got[("igwn_alert_alerts_received_total", (("topic", "em_bright"),))] == 2
    assert kinds["igwn_alert_alerts"] == "counter"
    assert got[("igwn_alert_lag", (("partition", "0"), ("topic", "superevent")))] == 3
    assert got[("igwn_alert_lag", (("partition", "1"), ("topic", "superevent")))] == 0
    assert got[("igwn_alert_lag_total", ())] == 3
    assert kinds["igwn_alert_lag"] == "gauge"
    assert got[("igwn_alert_partitions", ())] == 2
    last = got[("igwn_alert_last_alert_timestamp_seconds", (("topic", "superevent"),))]
    assert abs(last - time.time()) < 60
    broker = got[("igwn_alert_last_alert_broker_timestamp_seconds", (("topic", "em_bright"),))]
    assert broker == pytest.approx(ts)
    assert got[("igwn_alert_reconnects_total", ())] == 1
    assert got[("igwn_alert_errors_total", (("kind", "transient"),))] == 2
    assert got[("igwn_alert_errors_total", (("kind", "callback"),))] == 1
    # the state set: exactly one state is 1
    states = {
        dict(labels)["igwn_alert_listener_state"]: v
        for (name, labels), v in got.items()
        if name == "igwn_alert_listener_state"
    }
    assert states == {"starting": 0, "listening": 1, "reconnecting": 0, "stopped": 0}
    assert kinds["igwn_alert_listener_state"] in ("stateset", "gauge")
    assert got[("igwn_alert_listener_state_seconds", ())] >= 0
    # summaries: quantiles over the window, count and sum over everything
    assert kinds["igwn_alert_latency_seconds"] == "summary"
    p50 = got[("igwn_alert_latency_seconds", (("quantile", "0.5"),))]
    assert 1.4 < p50 < 60
    assert got[("igwn_alert_latency_seconds_count", ())] == 6
    assert got[("igwn_alert_callback_duration_seconds_count", ())] == 5
    assert got[("igwn_alert_callback_duration_seconds", (("quantile", "0.99"),))] >= 0
    # publisher
    assert got[("igwn_alert_publish_written_total", ())] == 3
    assert got[("igwn_alert_publish_delivered_total", ())] == 1
    assert got[("igwn_alert_publish_failed_total", ())] == 1
    assert got[("igwn_alert_publish_in_flight", ())] == 1
    assert got[("igwn_alert_healthy", ())] == 1


def test_values_are_read_at_scrape_time(served: Any) -> None:
    c, server = served
    before = samples(scrape(server)[2])
    assert ("igwn_alert_alerts_total", (("topic", "superevent"),)) not in before
    assert math.isnan(before[("igwn_alert_latency_seconds", (("quantile", "0.5"),))])
    assert before[("igwn_alert_latency_seconds_count", ())] == 0
    assert before[("igwn_alert_healthy", ())] == 0  # stopped
    feed(c)
    after = samples(scrape(server)[2])
    assert after[("igwn_alert_alerts_total", (("topic", "superevent"),))] == 4


def test_healthz_follows_the_health_rule(served: Any) -> None:
    c, server = served
    status, _, body = scrape(server, "/healthz")
    assert status == 503
    assert body.strip() == "unhealthy: the listener is stopped"
    feed(c)
    status, _, body = scrape(server, "/healthz")
    assert status == 200, body
    assert body.startswith("ok: listening")
    c._listener_stats.set_lag({("superevent", 0): (0, 101)})  # above max_lag=100
    status, _, body = scrape(server, "/healthz")
    assert (status, body.strip()) == (503, "unhealthy: lag 101 above 100")
    assert samples(scrape(server)[2])[("igwn_alert_healthy", ())] == 0


def test_close_frees_the_port(alert_client: igwn_alert.client) -> None:
    server = alert_client.serve_metrics(0, addr="127.0.0.1")
    port = server.port
    assert scrape(server)[0] == 200
    server.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
    # and the same port can be served again
    again = alert_client.serve_metrics(port, addr="127.0.0.1")
    try:
        assert scrape(again)[0] == 200
    finally:
        again.close()


def test_port_in_use_is_named(served: Any) -> None:
    c, server = served
    with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{server.port}"):
        c.serve_metrics(server.port, addr="127.0.0.1")


def test_bad_port_is_named(alert_client: igwn_alert.client) -> None:
    with pytest.raises(ValueError, match="port"):
        alert_client.serve_metrics(70000)
    with pytest.raises(ValueError, match="port"):
        alert_client.serve_metrics("9100")  # type: ignore[arg-type]


def test_collector_registers_in_a_registry(alert_client: igwn_alert.client) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    _metrics.register(alert_client, registry)
    feed(alert_client)
    text = generate_latest(registry).decode()
    assert samples(text)[("igwn_alert_alerts_total", (("topic", "superevent"),))] == 4


def test_missing_prometheus_client_names_the_extra(
    alert_client: igwn_alert.client, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(sys.modules):
        if name == "prometheus_client" or name.startswith("prometheus_client."):
            monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]
    with pytest.raises(ImportError, match=r"pip install 'igwn-alert\[metrics\]'"):
        alert_client.serve_metrics(0)


def test_parse_address() -> None:
    assert _metrics.parse_address("9100") == ("0.0.0.0", 9100)
    assert _metrics.parse_address("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert _metrics.parse_address("[::1]:9100") == ("::1", 9100)
    with pytest.raises(ValueError, match="not a port"):
        _metrics.parse_address("localhost:http")
