"""An offline, in-process Kafka broker for demos, development and tests.

:class:`EmbeddedBroker` runs librdkafka's *mock cluster*, which ships inside the
``confluent-kafka`` wheel, so it needs neither Java nor a network: it listens on
``127.0.0.1`` and speaks enough of the Kafka protocol for :class:`igwn_alert.client`
(and any other Kafka client, in this process or another one) to publish and listen
without credentials.

.. rubric:: Two backends

``native`` (preferred, chosen automatically when available)
    The mock cluster is created through librdkafka's C API (``rd_kafka_mock_*``), loaded
    with :mod:`ctypes` from the very library that ``confluent_kafka`` uses. This gives
    topics with a chosen partition count (:meth:`EmbeddedBroker.create_topics`) and a
    consumer-group initial rebalance delay of 0 ms, so that a subscribing listener gets
    its partitions in about 0.1 s.
``config``
    The fallback: a ``confluent_kafka.Producer`` configured with
    ``test.mock.num.brokers=1`` owns the mock cluster. Topics can only be created by
    auto-creation (always 4 partitions), and a consumer group's first join waits the
    mock's fixed initial rebalance delay of about 3 s.

.. rubric:: What the mock cluster does and does not do

Measured with confluent-kafka 2.16 (librdkafka 2.16):

* Supported: Produce, Fetch, Metadata, ListOffsets (earliest / latest; a timestamp
  look-up answers offset -1), consumer groups with the classic protocol (JoinGroup,
  SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, FindCoordinator), the
  KIP-848 ``group.protocol=consumer`` protocol, idempotent and transactional producers.
* Topics are auto-created, with 4 partitions, by a produce or by a Metadata request that
  names them (``list_topics(topic=...)``). :meth:`EmbeddedBroker.create_topics` with the
  ``native`` backend creates them with the partition count you choose.
* Not supported: the admin API's CreateTopics and DeleteTopics (they time out waiting
  for a controller), DescribeConfigs (``_UNSUPPORTED_FEATURE``), ACLs, and SSL or SASL:
  the listener is plaintext only, so clients must be unauthenticated
  (``igwn_alert.client(noauth=True)``).
* Fetch latency: the mock does not wake a waiting Fetch when data arrives, so a message
  can take up to the consumer's ``fetch.wait.max.ms`` (500 ms by default) to be
  delivered.
* Consumer groups, classic protocol: after a member leaves (LeaveGroup), the next member
  of the same group waits ``session.timeout.ms`` minus 1 s (44 s with librdkafka's
  default) before it gets an assignment. Use a short ``session.timeout.ms``, a fresh
  group name, or the KIP-848 protocol in tests that rejoin a group.
* The listening port is random: librdkafka has no option to choose it. When you ask for
  a fixed port, :class:`EmbeddedBroker` listens on it itself and forwards the bytes to
  the mock cluster; the cluster's metadata still advertises its own random port on the
  same host, which clients then use directly.
* Everything is kept in memory and is lost when the broker stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import logging
import os
import signal
import socket
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator
from types import FrameType, TracebackType
from typing import Any, Callable, Optional, TextIO

__all__ = [
    "DEFAULT_SERVE_TOPICS",
    "EmbeddedBroker",
    "EmbeddedBrokerError",
    "serve",
]

log = logging.getLogger(__name__)

#: The host the mock cluster listens on.
HOST = "127.0.0.1"

#: Short topic names that :func:`serve` creates by default (GraceDB's usual topics).
DEFAULT_SERVE_TOPICS: tuple[str, ...] = (
    "superevent",
    "test_superevent",
    "mdc_superevent",
    "cbc_gstlal",
    "cbc_pycbc",
    "cbc_mbta",
    "cbc_spiir",
    "burst_cwb",
    "external_fermi",
    "external_swift",
)

#: Partition count of topics that the mock cluster creates on its own.
AUTO_CREATED_PARTITIONS = 4

_RD_KAFKA_PRODUCER = 0
_RD_KAFKA_CONF_OK = 0
_ERR_TOPIC_ALREADY_EXISTS = 36

_LOG_LEVELS = {
    0: logging.CRITICAL,
    1: logging.CRITICAL,
    2: logging.CRITICAL,
    3: logging.ERROR,
    4: logging.WARNING,
    5: logging.INFO,
    6: logging.INFO,
    7: logging.DEBUG,
}

_LogCallback = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p
)


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be started or used."""


# --------------------------------------------------------------------------------------
# Finding librdkafka
# --------------------------------------------------------------------------------------


def _candidate_libraries() -> Iterator[str]:
    """Yield paths of librdkafka shared libraries, the one confluent_kafka uses first."""
    import confluent_kafka  # importing it loads librdkafka into the process

    # The exact library already mapped into this process (Linux).
    with (
        contextlib.suppress(OSError),
        open("/proc/self/maps", encoding="utf-8", errors="replace") as maps,
    ):
        for line in maps:
            path = line.rsplit(" ", 1)[-1].strip()
            if "librdkafka" in os.path.basename(path) and os.path.exists(path):
                yield path
    # The copy bundled in the wheel (auditwheel, delocate, delvewheel layouts).
    package_dir = os.path.dirname(os.path.abspath(confluent_kafka.__file__))
    site_dir = os.path.dirname(package_dir)
    patterns = [
        os.path.join(site_dir, "confluent_kafka.libs", "librdkafka*"),
        os.path.join(package_dir, ".dylibs", "librdkafka*"),
        os.path.join(package_dir, "librdkafka*"),
    ]
    for pattern in patterns:
        yield from sorted(glob.glob(pattern))
    # A system-wide library (confluent-kafka built from source).
    found = ctypes.util.find_library("rdkafka")
    if found:
        yield found


_native_lock = threading.Lock()
_native_lib: Optional[ctypes.CDLL] = None
_native_error: Optional[str] = None


def _load_native() -> ctypes.CDLL:
    """Return librdkafka with the mock-cluster functions declared.

    Raises
    ------
    EmbeddedBrokerError
        If no librdkafka with the mock-cluster C API can be loaded.
    """
    global _native_lib, _native_error
    with _native_lock:
        if _native_lib is not None:
            return _native_lib
        if _native_error is not None:
            raise EmbeddedBrokerError(_native_error)
        errors: list[str] = []
        for path in _candidate_libraries():
            try:
                lib = ctypes.CDLL(path)
                _declare(lib)
            except (OSError, AttributeError) as exc:
                errors.append(f"{path}: {exc}")
                continue
            log.debug("using librdkafka mock cluster C API from %s", path)
            _native_lib = lib
            return lib
        _native_error = "librdkafka's mock cluster C API is not available" + (
            " (" + "; ".join(errors) + ")" if errors else ""
        )
        raise EmbeddedBrokerError(_native_error)


def _declare(lib: ctypes.CDLL) -> None:
    """Declare the argument and return types of the librdkafka functions used."""
    vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    lib.rd_kafka_conf_new.restype = vp
    lib.rd_kafka_conf_new.argtypes = []
    lib.rd_kafka_conf_set.restype = ci
    lib.rd_kafka_conf_set.argtypes = [vp, cp, cp, cp, ctypes.c_size_t]
    lib.rd_kafka_conf_set_log_cb.restype = None
    lib.rd_kafka_conf_set_log_cb.argtypes = [vp, _LogCallback]
    lib.rd_kafka_conf_destroy.restype = None
    lib.rd_kafka_conf_destroy.argtypes = [vp]
    lib.rd_kafka_new.restype = vp
    lib.rd_kafka_new.argtypes = [ci, vp, cp, ctypes.c_size_t]
    lib.rd_kafka_destroy.restype = None
    lib.rd_kafka_destroy.argtypes = [vp]
    lib.rd_kafka_mock_cluster_new.restype = vp
    lib.rd_kafka_mock_cluster_new.argtypes = [vp, ci]
    lib.rd_kafka_mock_cluster_destroy.restype = None
    lib.rd_kafka_mock_cluster_destroy.argtypes = [vp]
    lib.rd_kafka_mock_cluster_bootstraps.restype = cp
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [vp]
    lib.rd_kafka_mock_topic_create.restype = ci
    lib.rd_kafka_mock_topic_create.argtypes = [vp, cp, ci, ci]
    lib.rd_kafka_mock_broker_set_rtt.restype = ci
    lib.rd_kafka_mock_broker_set_rtt.argtypes = [vp, ctypes.c_int32, ci]
    if hasattr(lib, "rd_kafka_mock_group_initial_rebalance_delay_ms"):
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms.restype = None
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms.argtypes = [vp, ctypes.c_int32]


def _forward_librdkafka_log(
    rk: Any, level: int, facility: bytes | None, message: bytes | None
) -> None:
    """Route a librdkafka log line of the mock cluster to Python logging at debug level."""
    try:
        fac = facility.decode("utf-8", "replace") if facility else ""
        text = message.decode("utf-8", "replace") if message else ""
        log.debug("librdkafka %s [level %d]: %s", fac, level, text)
    except Exception:  # noqa: BLE001  # pragma: no cover - no exception may cross into C
        pass


# One C callback for the whole process: it must outlive every handle that uses it.
_LOG_CALLBACK = _LogCallback(_forward_librdkafka_log)


# --------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------


class _NativeCluster:
    """A mock cluster created through librdkafka's C API."""

    native = True

    def __init__(self, broker_rtt_ms: int, rebalance_delay_ms: int) -> None:
        lib = _load_native()
        self._lib = lib
        errstr = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        lib.rd_kafka_conf_set_log_cb(conf, _LOG_CALLBACK)
        # The owner handle never connects anywhere; it only hosts the mock cluster.
        lib.rd_kafka_conf_set(conf, b"bootstrap.servers", b"", errstr, len(errstr))
        rk = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errstr, len(errstr))
        if not rk:
            lib.rd_kafka_conf_destroy(conf)
            raise EmbeddedBrokerError(
                "cannot create the mock cluster's owner handle: "
                + errstr.value.decode("utf-8", "replace")
            )
        mcluster = lib.rd_kafka_mock_cluster_new(rk, 1)
        if not mcluster:
            lib.rd_kafka_destroy(rk)
            raise EmbeddedBrokerError("librdkafka could not create a mock cluster")
        self._rk: Optional[int] = rk
        self._mcluster: Optional[int] = mcluster
        if hasattr(lib, "rd_kafka_mock_group_initial_rebalance_delay_ms"):
            lib.rd_kafka_mock_group_initial_rebalance_delay_ms(mcluster, rebalance_delay_ms)
        if broker_rtt_ms:
            lib.rd_kafka_mock_broker_set_rtt(mcluster, -1, broker_rtt_ms)
        bootstraps = lib.rd_kafka_mock_cluster_bootstraps(mcluster)
        self.address = _parse_address(bootstraps.decode("ascii") if bootstraps else "")

    def create_topic(self, name: str, partitions: int) -> bool:
        """Create a topic; return False if it already existed."""
        if self._mcluster is None:
            raise EmbeddedBrokerError("the embedded broker is stopped")
        err = self._lib.rd_kafka_mock_topic_create(
            self._mcluster, name.encode("utf-8"), partitions, 1
        )
        if err == _ERR_TOPIC_ALREADY_EXISTS:
            return False
        if err:
            raise EmbeddedBrokerError(f"cannot create topic {name!r}: librdkafka error {err}")
        return True

    def close(self) -> None:
        """Destroy the mock cluster and its owner handle."""
        mcluster, rk = self._mcluster, self._rk
        self._mcluster = self._rk = None
        if mcluster:
            self._lib.rd_kafka_mock_cluster_destroy(mcluster)
        if rk:
            self._lib.rd_kafka_destroy(rk)


class _ConfigCluster:
    """A mock cluster owned by a producer configured with ``test.mock.num.brokers``."""

    native = False

    def __init__(self, broker_rtt_ms: int) -> None:
        import confluent_kafka

        self._producer: Any = confluent_kafka.Producer(
            {
                "test.mock.num.brokers": 1,
                "test.mock.broker.rtt": broker_rtt_ms,
                "bootstrap.servers": "",
                "logger": logging.getLogger(__name__ + ".librdkafka"),
            }
        )
        metadata = self._producer.list_topics(timeout=10)
        broker = next(iter(metadata.brokers.values()))
        self.address = (str(broker.host), int(broker.port))

    def create_topic(self, name: str, partitions: int) -> bool:
        """Create a topic by auto-creation (always 4 partitions); False if it existed."""
        if self._producer is None:
            raise EmbeddedBrokerError("the embedded broker is stopped")
        if name in self._producer.list_topics(timeout=10).topics:
            return False
        if partitions != AUTO_CREATED_PARTITIONS:
            log.warning(
                "the embedded broker's 'config' backend creates topic %r with %d "
                "partitions, not %d",
                name,
                AUTO_CREATED_PARTITIONS,
                partitions,
            )
        metadata = self._producer.list_topics(topic=name, timeout=10)
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None:
            error = None if topic is None else topic.error
            raise EmbeddedBrokerError(f"cannot create topic {name!r}: {error}")
        return True

    def close(self) -> None:
        """Destroy the owning producer, and with it the mock cluster."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.poll(0)  # hand pending librdkafka log lines to Python logging
            del producer


def _parse_address(bootstraps: str) -> tuple[str, int]:
    """Return ``(host, port)`` of the first broker in a bootstrap list."""
    first = bootstraps.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not port.isdigit():
        raise EmbeddedBrokerError(f"unexpected mock cluster address {bootstraps!r}")
    return host, int(port)


# --------------------------------------------------------------------------------------
# Fixed-port forwarding
# --------------------------------------------------------------------------------------


class _PortForwarder:
    """Listen on a fixed local port and forward every connection to another address."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self._target = target
        try:
            self._server = socket.create_server((HOST, port))
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise EmbeddedBrokerError(f"cannot listen on {HOST}:{port}: {reason}") from exc
        self._server.settimeout(0.2)
        self.port = int(self._server.getsockname()[1])
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"igwn-alert-broker-forward-{self.port}", daemon=True
        )
        self._accept_thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            try:
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
                client.settimeout(None)
            except OSError as exc:
                log.debug("cannot reach the mock cluster at %s: %s", self._target, exc)
                client.close()
                continue
            with self._lock:
                if self._stopping.is_set():
                    client.close()
                    upstream.close()
                    break
                self._sockets.update((client, upstream))
                for src, dst in ((client, upstream), (upstream, client)):
                    thread = threading.Thread(
                        target=self._pump,
                        args=(src, dst),
                        name="igwn-alert-broker-pump",
                        daemon=True,
                    )
                    self._threads.append(thread)
                    thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop accepting, close every forwarded connection and wait for the threads."""
        self._stopping.set()
        self._accept_thread.join(2.0)
        self._server.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
            threads, self._threads = self._threads, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(2.0)
        for sock in sockets:
            sock.close()


def _shutdown(
    forwarder: Optional[_PortForwarder], cluster: _NativeCluster | _ConfigCluster
) -> None:
    """Close a forwarder and a cluster (the finalizer of :class:`EmbeddedBroker`)."""
    if forwarder is not None:
        forwarder.close()
    cluster.close()


# --------------------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------------------


class EmbeddedBroker:
    """A local, unauthenticated Kafka broker running inside this process.

    Parameters
    ----------
    port : int, optional
        A fixed port to listen on (on ``127.0.0.1``). By default the mock cluster's own,
        random, port is used. See the module documentation for how a fixed port works.
    backend : {'auto', 'native', 'config'}, optional
        How to create the mock cluster: ``'native'`` through librdkafka's C API,
        ``'config'`` through a producer with ``test.mock.num.brokers``, ``'auto'``
        (default) native when available, else config.
    broker_rtt_ms : int, optional
        Simulated round-trip time of every request, in milliseconds (default 0).
    group_initial_rebalance_delay_ms : int, optional
        The delay before a new consumer group's first assignment (``native`` backend
        only; default 0 ms, where a real Kafka broker uses 3000 ms).

    Examples
    --------
    >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
    ...     broker.create_topics(["gracedb.superevent"])
    ...     alerts = igwn_alert.client(server=broker.server, port=broker.port, noauth=True)
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        backend: str = "auto",
        broker_rtt_ms: int = 0,
        group_initial_rebalance_delay_ms: int = 0,
    ) -> None:
        if backend not in ("auto", "native", "config"):
            raise ValueError(f"backend must be 'auto', 'native' or 'config', not {backend!r}")
        if port is not None and not (isinstance(port, int) and 0 <= port < 65536):
            raise ValueError(f"port must be an int between 0 and 65535, not {port!r}")
        self._requested_port = port
        self._backend = backend
        self._rtt = int(broker_rtt_ms)
        self._rebalance_delay = int(group_initial_rebalance_delay_ms)
        self._cluster: _NativeCluster | _ConfigCluster | None = None
        self._forwarder: Optional[_PortForwarder] = None
        self._finalizer: Optional[weakref.finalize[Any, Any]] = None
        self._lock = threading.RLock()

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> EmbeddedBroker:
        """Start the broker (a no-op if it is running).

        Returns
        -------
        EmbeddedBroker
            This broker, so that ``broker = EmbeddedBroker().start()`` works.

        Raises
        ------
        EmbeddedBrokerError
            If the mock cluster cannot be created, or the fixed port is not free.
        """
        with self._lock:
            if self._cluster is not None:
                return self
            cluster = self._create_cluster()
            try:
                if self._requested_port:
                    self._forwarder = _PortForwarder(self._requested_port, cluster.address)
            except BaseException:
                cluster.close()
                raise
            self._cluster = cluster
            # Stops the cluster if this object is garbage-collected or at interpreter exit,
            # before librdkafka's threads could call into a finalizing interpreter.
            self._finalizer = weakref.finalize(self, _shutdown, self._forwarder, cluster)
            log.info(
                "embedded broker started on %s (backend %s)",
                self.bootstrap,
                "native" if cluster.native else "config",
            )
            return self

    def _create_cluster(self) -> _NativeCluster | _ConfigCluster:
        if self._backend in ("auto", "native"):
            try:
                return _NativeCluster(self._rtt, self._rebalance_delay)
            except EmbeddedBrokerError as exc:
                if self._backend == "native":
                    raise
                log.debug("falling back to the 'config' mock cluster backend: %s", exc)
        try:
            return _ConfigCluster(self._rtt)
        except Exception as exc:
            raise EmbeddedBrokerError(f"cannot start the embedded broker: {exc}") from exc

    def stop(self) -> None:
        """Stop the broker and drop all its data (a no-op if it is not running).

        Connected clients see their connections closed; stop them first to keep their
        logs quiet.
        """
        with self._lock:
            finalizer, self._finalizer = self._finalizer, None
            self._forwarder = None
            self._cluster = None
        if finalizer is not None:
            finalizer()
            log.info("embedded broker stopped")

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running on {self.bootstrap}" if self.running else "stopped"
        return f"<EmbeddedBroker {state}>"

    # -- addresses -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """bool: Whether the broker is running."""
        return self._cluster is not None

    @property
    def native(self) -> bool:
        """bool: Whether the running broker uses librdkafka's mock C API (``native``)."""
        return self._require().native

    @property
    def host(self) -> str:
        """str: The host clients connect to, ``'127.0.0.1'``."""
        return HOST

    @property
    def port(self) -> int:
        """int: The port clients connect to (the fixed port, if one was asked for)."""
        cluster = self._require()
        if self._forwarder is not None:
            return self._forwarder.port
        return cluster.address[1]

    @property
    def bootstrap(self) -> str:
        """str: The ``bootstrap.servers`` value for Kafka clients: ``'127.0.0.1:PORT'``."""
        return f"{self.host}:{self.port}"

    @property
    def server(self) -> str:
        """str: The ``server`` argument for :class:`igwn_alert.client`: ``'kafka://127.0.0.1'``.

        Pass :attr:`port` as the client's ``port``.
        """
        return f"kafka://{self.host}"

    @property
    def url(self) -> str:
        """str: The full broker URL, ``'kafka://127.0.0.1:PORT'``."""
        return f"kafka://{self.bootstrap}"

    def _require(self) -> _NativeCluster | _ConfigCluster:
        cluster = self._cluster
        if cluster is None:
            raise EmbeddedBrokerError("the embedded broker is not running; call start() first")
        return cluster

    # -- topics --------------------------------------------------------------------------

    def create_topics(self, names: str | Iterable[str], partitions: int = 1) -> list[str]:
        """Create topics, so that listeners that assign partitions find them.

        Topics that already exist are left as they are.

        Parameters
        ----------
        names : str or iterable of str
            Full broker topic names, such as ``'gracedb.superevent'``.
        partitions : int, optional
            The number of partitions (default 1). The ``config`` backend can only
            create topics with 4 partitions, and logs a warning when asked otherwise.

        Returns
        -------
        list of str
            The names of the topics that were created (not those that existed).

        Raises
        ------
        EmbeddedBrokerError
            If the broker is not running or a topic cannot be created.
        ValueError
            If ``partitions`` is less than 1.
        """
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {partitions}")
        if isinstance(names, str):
            names = [names]
        cluster = self._require()
        created = [name for name in names if cluster.create_topic(name, partitions)]
        if created:
            log.debug("created topics %s", created)
        return created

    def list_topics(self, timeout: float = 10.0) -> dict[str, int]:
        """Return the broker's topics and their partition counts.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the broker's answer.

        Returns
        -------
        dict of str to int
            Topic name to number of partitions.
        """
        import confluent_kafka

        self._require()
        producer = confluent_kafka.Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "logger": logging.getLogger(__name__ + ".librdkafka"),
            }
        )
        try:
            metadata = producer.list_topics(timeout=timeout)
            return {name: len(t.partitions) for name, t in metadata.topics.items()}
        finally:
            del producer


# --------------------------------------------------------------------------------------
# Foreground server
# --------------------------------------------------------------------------------------


def serve(
    port: int | None = None,
    stream: TextIO | None = None,
    topics: Iterable[str] = DEFAULT_SERVE_TOPICS,
    *,
    group: str = "gracedb",
    partitions: int = 1,
    stop_event: threading.Event | None = None,
) -> None:
    """Run an :class:`EmbeddedBroker` in the foreground until interrupted.

    Prints one line with the broker's address and one with the command that listens to
    it, then blocks until Ctrl-C (KeyboardInterrupt), SIGTERM or ``stop_event``, stops
    the broker and returns normally.

    Parameters
    ----------
    port : int, optional
        The port to listen on; by default a random free port.
    stream : text file, optional
        Where to print the two lines (default: ``sys.stdout`` at call time).
    topics : iterable of str, optional
        Short names of the topics to create for ``group`` (default
        :data:`DEFAULT_SERVE_TOPICS`), so that ``igwn-alert listen`` finds them.
    group : str, optional
        The GraceDB group the topics belong to (default ``'gracedb'``).
    partitions : int, optional
        Partitions per created topic (default 1).
    stop_event : threading.Event, optional
        Set it (from another thread) to stop the server.

    Raises
    ------
    EmbeddedBrokerError
        If the broker cannot start (for example, the port is taken).
    """
    out = sys.stdout if stream is None else stream
    stop = stop_event if stop_event is not None else threading.Event()
    with EmbeddedBroker(port) as broker, _stop_on_sigterm(stop):
        broker.create_topics([f"{group}.{t}" for t in topics], partitions=partitions)
        group_option = "" if group == "gracedb" else f" -g {group}"
        out.write(f"igwn-alert embedded broker listening on {broker.url}\n")
        out.write(
            f"Listen with: igwn-alert -s {broker.server} -p {broker.port}{group_option} "
            "--no-auth listen\n"
        )
        out.flush()
        try:
            while not stop.wait(0.25):
                pass
        except KeyboardInterrupt:
            log.info("embedded broker interrupted")
    log.info("embedded broker server finished")


@contextlib.contextmanager
def _stop_on_sigterm(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGTERM while inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: Callable[[int, FrameType | None], Any] | int | None
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
