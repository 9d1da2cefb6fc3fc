"""Prometheus metrics of a client, read from ``client.stats()`` at scrape time.

Needs the optional ``prometheus-client`` (``pip install 'igwn-alert[metrics]'``). Nothing
runs on the listener's hot path: :class:`ClientCollector` turns one ``client.stats()``
snapshot into metric families each time Prometheus scrapes. :func:`serve_metrics` serves
them over HTTP (``/metrics``) together with a health check (``/healthz``: 200 when
:func:`igwn_alert._stats.health` says ok, 503 otherwise) for liveness probes.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import threading
from collections.abc import Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any, Callable, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ._stats import STATES, check_limits, health

__all__ = ["ClientCollector", "MetricsServer", "parse_address", "register", "serve_metrics"]

log = logging.getLogger(__name__)

_EXTRA_HINT = (
    "the Prometheus exporter needs the prometheus-client package: pip install 'igwn-alert[metrics]'"
)


def _prometheus() -> Any:
    try:
        import prometheus_client
        import prometheus_client.core
    except ImportError as exc:
        raise ImportError(_EXTRA_HINT) from exc
    return prometheus_client


def _quantiles(metric: Any, name: str, values: dict[str, Any]) -> None:
    for q, key in (("0.5", "p50"), ("0.99", "p99")):
        value = values[key]
        metric.add_sample(name, {"quantile": q}, math.nan if value is None else float(value))
    metric.add_sample(f"{name}_count", {}, float(values["count"]))
    metric.add_sample(f"{name}_sum", {}, float(values["sum"]))


class ClientCollector:
    """A Prometheus collector of one client's stats (see :doc:`/operations` for the names).

    Parameters
    ----------
    client : igwn_alert.client
        The client; its ``stats()`` is called at each scrape.
    health_options : dict, optional
        Keyword arguments of :func:`igwn_alert._stats.health` for ``igwn_alert_healthy``.
    """

    def __init__(self, client: Any, health_options: Optional[dict[str, Any]] = None) -> None:
        self._client = client
        self._health_options = dict(health_options or {})
        self._core = _prometheus().core

    def describe(self) -> list[Any]:
        """Return nothing: the families depend on the traffic seen (no registry-time scrape).

        Returns
        -------
        list
            Empty.
        """
        return []

    def collect(self) -> Iterator[Any]:
        """Yield the metric families of one ``client.stats()`` snapshot.

        Yields
        ------
        prometheus_client.Metric
            The families.
        """
        core = self._core
        stats = self._client.stats()
        lst, pub = stats["listener"], stats["publisher"]

        state = core.StateSetMetricFamily(
            "igwn_alert_listener_state", "State of the listener (one of them is 1)."
        )
        state.add_metric([], {s: lst["state"] == s for s in STATES})
        yield state
        yield core.GaugeMetricFamily(
            "igwn_alert_listener_state_seconds",
            "Seconds since the listener entered its current state.",
            value=lst["in_state_s"],
        )
        ok, _ = health(stats, **self._health_options)
        yield core.GaugeMetricFamily(
            "igwn_alert_healthy", "1 if the listener passes its health rule, else 0.", value=ok
        )
        yield core.GaugeMetricFamily(
            "igwn_alert_partitions",
            "Partitions the listener holds.",
            value=len(lst["partitions"]),
        )

        delivered = core.CounterMetricFamily(
            "igwn_alert_alerts",
            "Alerts handed to the callback that returned normally.",
            labels=["topic"],
        )
        received = core.CounterMetricFamily(
            "igwn_alert_alerts_received", "Alerts handed to the callback.", labels=["topic"]
        )
        last = core.GaugeMetricFamily(
            "igwn_alert_last_alert_timestamp_seconds",
            "Local time the last alert arrived (Unix seconds).",
            labels=["topic"],
        )
        last_broker = core.GaugeMetricFamily(
            "igwn_alert_last_alert_broker_timestamp_seconds",
            "Kafka timestamp of the last alert (Unix seconds).",
            labels=["topic"],
        )
        for topic, t in sorted(lst["topics"].items()):
            delivered.add_metric([topic], t["delivered"])
            received.add_metric([topic], t["received"])
            if t["received"]:
                last.add_metric([topic], t["last_arrival"])
            if t["last_broker_timestamp"] is not None:
                last_broker.add_metric([topic], t["last_broker_timestamp"])
        yield from (delivered, received, last, last_broker)

        latency = core.SummaryMetricFamily(
            "igwn_alert_latency_seconds",
            "From the alert's Kafka timestamp to the start of the callback; quantiles over "
            "the last alerts.",
        )
        _quantiles(latency, "igwn_alert_latency_seconds", lst["latency_s"])
        yield latency
        duration = core.SummaryMetricFamily(
            "igwn_alert_callback_duration_seconds",
            "Time the callback took; quantiles over the last alerts.",
        )
        _quantiles(duration, "igwn_alert_callback_duration_seconds", lst["callback_s"])
        yield duration

        lag = core.GaugeMetricFamily(
            "igwn_alert_lag",
            "Alerts on the partition not yet handed to the callback (end offset - position).",
            labels=["topic", "partition"],
        )
        for row in lst["lag"]["partitions"]:
            if row["lag"] is not None:
                lag.add_metric([row["topic"], str(row["partition"])], row["lag"])
        yield lag
        if lst["lag"]["total"] is not None:
            yield core.GaugeMetricFamily(
                "igwn_alert_lag_total",
                "Sum of igwn_alert_lag over the partitions held.",
                value=lst["lag"]["total"],
            )

        yield core.CounterMetricFamily(
            "igwn_alert_reconnects", "Times the listener reopened its stream.", lst["reconnects"]
        )
        errors = core.CounterMetricFamily(
            "igwn_alert_errors", "Errors seen by the listener, by kind.", labels=["kind"]
        )
        for kind, count in sorted(lst["errors"].items()):
            errors.add_metric([kind], count)
        yield errors

        for key, text in (
            ("written", "Alerts handed to the producer."),
            ("delivered", "Alerts the broker acknowledged."),
            ("failed", "Alerts that could not be delivered."),
        ):
            yield core.CounterMetricFamily(f"igwn_alert_publish_{key}", text, pub[key])
        yield core.GaugeMetricFamily(
            "igwn_alert_publish_in_flight",
            "Alerts written but neither delivered nor failed yet.",
            value=pub["in_flight"],
        )


def register(client: Any, registry: Any = None, **health_options: Any) -> ClientCollector:
    """Register a client's collector in a Prometheus registry.

    Parameters
    ----------
    client : igwn_alert.client
        The client.
    registry : prometheus_client.CollectorRegistry, optional
        Default: prometheus_client's global ``REGISTRY``.
    **health_options
        Keyword arguments of :func:`igwn_alert._stats.health` (for ``igwn_alert_healthy``).

    Returns
    -------
    ClientCollector
        The collector (``registry.unregister(collector)`` removes it).

    Raises
    ------
    ImportError
        If prometheus-client is not installed.
    """
    prometheus = _prometheus()
    collector = ClientCollector(client, health_options)
    (registry if registry is not None else prometheus.REGISTRY).register(collector)
    return collector


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics %s: " + format, self.address_string(), *args)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """A running HTTP server of a client's metrics (``/metrics``) and health (``/healthz``).

    Attributes
    ----------
    address : str
        The address it listens on.
    port : int
        The port it listens on (the one chosen when 0 was asked for).
    """

    def __init__(self, httpd: WSGIServer) -> None:
        self._httpd = httpd
        self.address = str(httpd.server_address[0])
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.name = f"igwn-alert-metrics-{self.port}"
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<igwn_alert MetricsServer http://{self.address}:{self.port}/metrics>"


def _app(client: Any, metrics_app: Callable[..., Any], health_options: dict[str, Any]) -> Any:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/").rstrip("/") == "/healthz":
            ok, reason = health(client.stats(), **health_options)
            body = f"{'ok' if ok else 'unhealthy'}: {reason}\n".encode()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    return app


def serve_metrics(
    client: Any,
    port: int,
    addr: str = "0.0.0.0",
    *,
    max_reconnecting_s: float = 60.0,
    max_lag: Optional[int] = None,
    max_silence_s: Optional[float] = None,
) -> MetricsServer:
    """Serve a client's metrics to Prometheus over HTTP, in a background thread.

    Parameters
    ----------
    client : igwn_alert.client
        The client.
    port : int
        TCP port (0: any free port, see ``MetricsServer.port``).
    addr : str, optional
        Address to listen on (default all IPv4 interfaces).
    max_reconnecting_s, max_lag, max_silence_s : optional
        The health rule of ``/healthz`` and ``igwn_alert_healthy`` (see
        :func:`igwn_alert._stats.health`).

    Returns
    -------
    MetricsServer
        The running server; ``close()`` stops it.

    Raises
    ------
    ImportError
        If prometheus-client is not installed (``pip install 'igwn-alert[metrics]'``).
    ValueError
        For a port that is not an int in 0-65535.
    OSError
        If the address cannot be bound (the message names it).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"the metrics port must be an int from 0 to 65535, not {port!r}")
    prometheus = _prometheus()
    options = {
        "max_reconnecting_s": max_reconnecting_s,
        "max_lag": max_lag,
        "max_silence_s": max_silence_s,
    }
    check_limits(**options)
    registry = prometheus.CollectorRegistry(auto_describe=False)
    registry.register(ClientCollector(client, options))
    app = _app(client, prometheus.make_wsgi_app(registry), options)
    server_class = _Server6 if ":" in addr else _Server
    try:
        httpd = make_server(addr, port, app, server_class, _QuietHandler)
    except OSError as exc:
        shown = f"[{addr}]" if ":" in addr else addr
        raise OSError(
            exc.errno, f"cannot serve metrics on {shown}:{port}: {exc.strerror}"
        ) from None
    server = MetricsServer(httpd)
    log.info("serving metrics on http://%s:%d/metrics", addr, server.port)
    return server


_ADDRESS = re.compile(r"^(?:(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:]+)):)?(?P<port>[^:]+)$")


def parse_address(text: str) -> tuple[str, int]:
    """Parse ``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` (``--metrics-port``).

    Parameters
    ----------
    text : str
        The option's value.

    Returns
    -------
    (str, int)
        Address (default ``0.0.0.0``) and port.

    Raises
    ------
    ValueError
        If it is not of that form.
    """
    match = _ADDRESS.match(text.strip())
    port = match.group("port") if match else ""
    if not match or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"not a port or HOST:PORT: {text!r}")
    return match.group("v6") or match.group("host") or "0.0.0.0", int(port)


def _address_option(text: str) -> tuple[str, int]:
    import argparse

    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_option(parser: Any) -> None:
    """Add ``--metrics-port [ADDR:]PORT`` to a sub-command's parser (``igwn-alert listen``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser.
    """
    parser.add_argument(
        "--metrics-port",
        type=_address_option,
        metavar="[ADDR:]PORT",
        help="serve Prometheus metrics on http://ADDR:PORT/metrics and a health check on "
        "/healthz (needs igwn-alert[metrics])",
    )


def serve_from_options(client: Any, opts: Any) -> Optional[MetricsServer]:
    """Start the metrics server asked for by ``--metrics-port``, if any.

    Parameters
    ----------
    client : igwn_alert.client
        The client.
    opts : argparse.Namespace
        The parsed options.

    Returns
    -------
    MetricsServer or None
        The running server, or None without the option.
    """
    where = getattr(opts, "metrics_port", None)
    if where is None:
        return None
    try:
        return serve_metrics(client, where[1], where[0])
    except ImportError as exc:  # the command line reports a RuntimeError on one line
        raise RuntimeError(str(exc)) from None
