"""Run real Apache Kafka brokers (KRaft mode) from Maven Central jars.

One implementation serves both the single combined broker+controller that
``scripts/kafka up`` keeps running for the test suite and the benchmarks, and
the throw-away N-node clusters that fault-injection tests start themselves.

Nothing here needs Docker or a Kafka distribution: the broker class path is
resolved with Maven (``scripts/kafka-pom.xml``, the one place that pins the
Kafka version) into ``.cache/kafka/lib-<version>/``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = REPO_ROOT / "scripts" / "kafka-pom.xml"
CACHE_DIR = Path(os.environ.get("IGWN_ALERT_KAFKA_CACHE", str(REPO_ROOT / ".cache" / "kafka")))
STATE_FILE = CACHE_DIR / "state.json"
SINGLE_DIR = CACHE_DIR / "broker"
SINGLE_LOG = SINGLE_DIR / "node-1" / "kafka.log"

HOST = "127.0.0.1"
MECHANISM = "SCRAM-SHA-512"
ADMIN_USER = "admin"
DEFAULT_HEAP = os.environ.get("IGWN_ALERT_KAFKA_HEAP", "512m")

#: Main classes, both in the kafka_2.13 jar.
BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BrokerError(RuntimeError):
    """The broker could not be fetched, formatted or started."""


# --------------------------------------------------------------------------- jars


def kafka_version() -> str:
    """The pinned Kafka version: the ``kafka.version`` property of kafka-pom.xml."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"no <kafka.version> property in {POM}")
    return (node.text or "").strip()


def lib_dir() -> Path:
    return CACHE_DIR / f"lib-{kafka_version()}"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so concurrent ``up``/fixtures do not race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_jars(log: Log = _stderr) -> Path:
    """Resolve the broker's runtime class path with Maven (once; cached)."""
    dest = lib_dir()
    marker = dest / ".complete"
    if marker.exists():
        return dest
    with file_lock(CACHE_DIR / "jars.lock"):
        if marker.exists():
            return dest
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven ('mvn') is needed to fetch the Kafka broker jars")
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"kafka: fetching Apache Kafka {kafka_version()} jars with Maven into {dest}")
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ]
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if res.returncode != 0:
            raise BrokerError(
                f"Maven failed ({res.returncode}) fetching the Kafka jars:\n"
                f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
            )
        if not (tmp / f"kafka_2.13-{kafka_version()}.jar").exists():
            raise BrokerError(f"Maven finished but {tmp} has no kafka_2.13 jar")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        marker.write_text("\n".join(sorted(p.name for p in dest.glob("*.jar"))) + "\n")
    return dest


def java_executable() -> str:
    """``$KAFKA_JAVA``, else ``$JAVA_HOME/bin/java``, else ``java`` on PATH (17+)."""
    explicit = os.environ.get("KAFKA_JAVA")
    if explicit:
        return explicit
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerError("no 'java' found (Java 17 or newer is needed for Kafka 4)")
    return found


# --------------------------------------------------------------------------- processes


def free_ports(count: int) -> list[int]:
    """``count`` distinct currently-free TCP ports on the loopback address."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # the state letter follows the parenthesised command name
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def pid_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pids_using_config(config: Path) -> list[int]:
    """Java processes whose command line names exactly this server.properties."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and str(config) in pid_cmdline(int(entry.name)):
            found.append(int(entry.name))
    return found


def _set_parent_death_signal() -> None:  # runs in the child, before exec
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def new_cluster_id() -> str:
    """A Kafka ``Uuid`` in its string form (URL-safe base64, no padding)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


LOG4J2 = """\
status = warn
name = kafka-test-broker
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = INFO
"""


@dataclass
class KafkaNode:
    """One KRaft process, combined broker+controller, bound to 127.0.0.1 only."""

    cluster: KafkaCluster = field(repr=False)
    node_id: int
    directory: Path
    plaintext_port: int
    controller_port: int
    sasl_port: Optional[int] = None
    pid: Optional[int] = None
    _proc: Optional[subprocess.Popen[bytes]] = field(default=None, repr=False)

    # -- addresses and paths
    @property
    def plaintext(self) -> str:
        return f"{HOST}:{self.plaintext_port}"

    @property
    def sasl(self) -> Optional[str]:
        return None if self.sasl_port is None else f"{HOST}:{self.sasl_port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "kafka.log"

    def properties(self) -> str:
        c = self.cluster
        n = len(c.nodes)
        listeners = [f"PLAINTEXT://{self.plaintext}"]
        protocol_map = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        if self.sasl is not None:
            listeners.append(f"SASL_PLAINTEXT://{self.sasl}")
            protocol_map.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
        advertised = ",".join(listeners)
        listeners.append(f"CONTROLLER://{HOST}:{self.controller_port}")
        voters = ",".join(f"{m.node_id}@{HOST}:{m.controller_port}" for m in c.nodes)
        props: dict[str, object] = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "listeners": ",".join(listeners),
            "advertised.listeners": advertised,
            "listener.security.protocol.map": ",".join(protocol_map),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": self.data_dir,
            # Authorisation: the admin and the (unauthenticated) PLAINTEXT, inter-broker
            # and controller principal ANONYMOUS may do anything; any SCRAM user gets
            # exactly what ACLs grant, as on SCIMMA Hopskotch.
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{c.admin_user};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
            "auto.create.topics.enable": "false",
            "num.partitions": 1,
            "default.replication.factor": n,
            "min.insync.replicas": 1,
            "offsets.topic.replication.factor": n,
            "offsets.topic.num.partitions": 10,
            "transaction.state.log.replication.factor": n,
            "transaction.state.log.min.isr": min(2, n),
            "transaction.state.log.num.partitions": 4,
            "share.coordinator.state.topic.replication.factor": n,
            "share.coordinator.state.topic.min.isr": min(2, n),
            "group.initial.rebalance.delay.ms": 0,
            "log.retention.hours": 24,
            "log.segment.bytes": 64 * 1024 * 1024,
            "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
            "delete.topic.enable": "true",
        }
        if not c.detach:
            # Test-owned clusters: notice a killed node (and let a restarted one
            # re-register) after 3 s instead of 9 s. The shared broker keeps defaults.
            props["broker.heartbeat.interval.ms"] = 500
            props["broker.session.timeout.ms"] = 3000
        if self.sasl is not None:
            props["sasl.enabled.mechanisms"] = MECHANISM
            props[f"listener.name.sasl_plaintext.{MECHANISM.lower()}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        props.update(c.extra_properties)
        lines = [f"{k}={v}" for k, v in props.items()]
        return (
            "# written by scripts/_kafka_broker; regenerated on format\n" + "\n".join(lines) + "\n"
        )

    # -- lifecycle
    def format_command(self) -> list[str]:
        c = self.cluster
        cmd = [
            java_executable(),
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
            "-cp",
            str(c.lib / "*"),
            STORAGE_TOOL_MAIN,
            "format",
            # one token: a random cluster id may start with "-", which argparse would
            # take for an option
            f"--cluster-id={c.cluster_id}",
            "--config",
            str(self.config_path),
        ]
        if c.sasl:
            cmd += ["--add-scram", f"{MECHANISM}=[name={c.admin_user},password={c.admin_password}]"]
        return cmd

    def write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.config_path.write_text(self.properties())
        (self.directory / "log4j2.properties").write_text(LOG4J2)

    def java_command(self) -> list[str]:
        c = self.cluster
        return [
            java_executable(),
            f"-Xmx{c.heap}",
            f"-Xms{min_heap(c.heap)}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.directory}",
            "-cp",
            str(c.lib / "*"),
            BROKER_MAIN,
            str(self.config_path),
        ]

    def is_running(self) -> bool:
        if self.pid is None:
            return False
        if self._proc is not None:
            return self._proc.poll() is None
        # not our child (e.g. started by `scripts/kafka up`): guard against pid reuse
        return pid_alive(self.pid) and str(self.config_path) in pid_cmdline(self.pid)

    def start(self, wait: bool = True, timeout: float = 120.0) -> None:
        """Start (or restart) the process on the same ports and data directory."""
        if self.is_running():
            return
        for port in (self.plaintext_port, self.controller_port, self.sasl_port):
            if port is not None and port_open(port, 0.2):
                raise BrokerError(f"port {HOST}:{port} of node {self.node_id} is in use")
        with open(self.log_file, "ab") as log:
            log.write(f"\n==== starting node {self.node_id} at {time.ctime()} ====\n".encode())
        if self.cluster.detach:
            self.pid = self._spawn_detached()
            self._proc = None
        else:
            with open(self.log_file, "ab") as log:
                self._proc = subprocess.Popen(
                    self.java_command(),
                    cwd=self.directory,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_set_parent_death_signal,
                )
            self.pid = self._proc.pid
        self.cluster.save_state()
        if wait:
            self.cluster.wait_ready(timeout=timeout, nodes=[self])

    def _spawn_detached(self) -> int:
        """Start the JVM as an orphan (not our child) that outlives the caller,
        e.g. ``scripts/kafka up`` or a pytest run that restarted the shared broker."""
        res = subprocess.run(
            [
                "/bin/sh",
                "-c",
                '"$@" </dev/null >>"$KAFKA_NODE_LOG" 2>&1 & echo $!',
                "sh",
                *self.java_command(),
            ],
            cwd=self.directory,
            env={**os.environ, "KAFKA_NODE_LOG": str(self.log_file)},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            start_new_session=True,
            check=True,
        )
        return int(res.stdout.strip())

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                return True
            time.sleep(0.05)
        return not self.is_running()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (controlled shutdown), then SIGKILL after ``timeout`` seconds."""
        if self.pid is None or not self.is_running():
            self._reap()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if not self._wait_exit(timeout):
            self.kill()
        self._reap()
        self.cluster.save_state()

    def kill(self) -> None:
        """SIGKILL: an abrupt crash, as for a partition-leader failure test."""
        if self.pid is not None and self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            if not self._wait_exit(15.0):
                raise BrokerError(f"node {self.node_id} (pid {self.pid}) survived SIGKILL")
        self._reap()
        self.cluster.save_state()

    def restart(self, timeout: float = 120.0) -> None:
        self.stop()
        self.start(timeout=timeout)

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        if not self.is_running():
            self.pid = None
            self._proc = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_file})"
        return "\n".join(text.splitlines()[-lines:])


def min_heap(heap: str) -> str:
    """Initial heap: 128m, or the maximum if that is smaller."""
    units = {"k": 1 / 1024, "m": 1, "g": 1024}
    unit = heap[-1].lower()
    mb = float(heap[:-1]) * units[unit] if unit in units else float(heap) / 2**20
    return heap if mb <= 128 else "128m"


@dataclass
class KafkaCluster:
    """N combined broker+controller KRaft nodes (N=1 for the shared test broker)."""

    directory: Path
    cluster_id: str
    sasl: bool
    admin_user: str
    admin_password: str
    heap: str
    detach: bool
    lib: Path
    extra_properties: dict[str, str] = field(default_factory=dict)
    nodes: list[KafkaNode] = field(default_factory=list)
    state_file: Optional[Path] = None

    # -- addresses
    @property
    def bootstrap(self) -> str:
        """Comma-separated PLAINTEXT bootstrap list."""
        return ",".join(n.plaintext for n in self.nodes)

    @property
    def sasl_bootstrap(self) -> Optional[str]:
        if not self.sasl:
            return None
        return ",".join(n.sasl or "" for n in self.nodes)

    @property
    def plaintext(self) -> str:
        return self.nodes[0].plaintext

    @property
    def mechanism(self) -> str:
        return MECHANISM

    def node(self, node_id: int) -> KafkaNode:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(node_id)

    # -- lifecycle
    def format(self) -> None:
        for n in self.nodes:
            n.write_config()
        procs = [
            (
                n,
                subprocess.Popen(
                    n.format_command(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                ),
            )
            for n in self.nodes
        ]
        errors = []
        for n, p in procs:
            out, _ = p.communicate(timeout=120)
            if p.returncode != 0:
                errors.append(f"node {n.node_id}: {out.decode(errors='replace')[-3000:]}")
        if errors:
            raise BrokerError("kafka storage format failed:\n" + "\n".join(errors))

    def start(self, timeout: float = 120.0) -> None:
        for n in self.nodes:
            n.start(wait=False)
        self.wait_ready(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node: SIGTERM to all at once, SIGKILL whatever outlives ``timeout``."""
        for n in self.nodes:
            if n.pid is not None and n.is_running():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(n.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for n in self.nodes:
            n._wait_exit(max(0.0, deadline - time.monotonic()))
        for n in self.nodes:
            n.kill()

    def kill(self) -> None:
        for n in self.nodes:
            n.kill()

    def restart(self, timeout: float = 120.0) -> None:
        """Stop and start again on the same ports with the same data (outage tests)."""
        self.stop()
        self.start(timeout=timeout)

    def running_nodes(self) -> list[KafkaNode]:
        return [n for n in self.nodes if n.is_running()]

    def wait_ready(
        self, timeout: float = 120.0, nodes: Optional[Sequence[KafkaNode]] = None
    ) -> None:
        """Wait until the given (default: all) nodes serve metadata and, with SASL,
        until the admin can authenticate with SCRAM. Raises BrokerError with the log tail."""
        from . import admin  # confluent_kafka is only needed from here on

        targets = list(self.nodes if nodes is None else nodes)
        deadline = time.monotonic() + timeout
        last_error = "not started"
        while True:
            dead = [n for n in targets if not n.is_running()]
            if dead:
                n = dead[0]
                raise BrokerError(
                    f"Kafka node {n.node_id} exited while starting; log: {n.log_file}\n"
                    + n.log_tail()
                )
            try:
                if all(port_open(n.plaintext_port) for n in targets):
                    admin.check_ready(
                        self, targets, timeout=min(10.0, max(1.0, deadline - time.monotonic()))
                    )
                    return
                last_error = "ports not open yet"
            except Exception as exc:  # noqa: BLE001 - report the last failure below
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                n = targets[0]
                raise BrokerError(
                    f"Kafka not ready after {timeout:.0f}s ({last_error}); log: {n.log_file}\n"
                    + n.log_tail()
                )
            time.sleep(0.25)

    # -- state (for the detached shared broker)
    def info(self) -> dict[str, Any]:
        """The JSON-able description printed by ``scripts/kafka up``."""
        first = self.nodes[0]
        return {
            "plaintext": first.plaintext,
            "sasl": first.sasl,
            "mechanism": MECHANISM,
            "admin_user": self.admin_user,
            "admin_password": self.admin_password,
            "log_dir": str(first.directory),
            "log_file": str(first.log_file),
            "pid": first.pid,
            "kafka_version": kafka_version(),
            "cluster_id": self.cluster_id,
            "bootstrap": self.bootstrap,
            "sasl_bootstrap": self.sasl_bootstrap,
            "directory": str(self.directory),
            "heap": self.heap,
            "detach": self.detach,
            "nodes": [
                {
                    "node_id": n.node_id,
                    "plaintext_port": n.plaintext_port,
                    "sasl_port": n.sasl_port,
                    "controller_port": n.controller_port,
                    "pid": n.pid,
                    "directory": str(n.directory),
                }
                for n in self.nodes
            ],
        }

    def save_state(self) -> None:
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.info(), fh, indent=1)
            fh.write("\n")
        tmp.replace(self.state_file)

    @classmethod
    def from_state(cls, state_file: Path = STATE_FILE) -> KafkaCluster:
        """Re-attach to a broker described by a state file (e.g. from ``scripts/kafka up``).
        Its nodes can then be stopped and started again on the same ports."""
        info = json.loads(state_file.read_text())
        cluster = cls(
            directory=Path(info["directory"]),
            cluster_id=info["cluster_id"],
            sasl=info["sasl"] is not None,
            admin_user=info["admin_user"],
            admin_password=info["admin_password"],
            heap=info.get("heap", DEFAULT_HEAP),
            detach=bool(info.get("detach", True)),
            lib=lib_dir(),
            state_file=state_file,
        )
        for nd in info["nodes"]:
            cluster.nodes.append(
                KafkaNode(
                    cluster=cluster,
                    node_id=nd["node_id"],
                    directory=Path(nd["directory"]),
                    plaintext_port=nd["plaintext_port"],
                    controller_port=nd["controller_port"],
                    sasl_port=nd["sasl_port"],
                    pid=nd["pid"],
                )
            )
        return cluster


def start_cluster(
    n: int = 3,
    base_dir: Optional[Path] = None,
    *,
    sasl: bool = False,
    heap: Optional[str] = None,
    detach: bool = False,
    state_file: Optional[Path] = None,
    extra_properties: Optional[dict[str, str]] = None,
    timeout: float = 180.0,
    log: Log = _stderr,
) -> KafkaCluster:
    """Format and start an ``n``-node KRaft cluster on fresh loopback ports.

    Every node is a combined broker+controller (static voter set of all ``n``),
    so a cluster of 3 survives the loss of any one node. With ``sasl=True`` each
    node also has a SASL_PLAINTEXT/SCRAM-SHA-512 listener and an ``admin`` super
    user with a random password. Unless ``detach`` is set, the JVMs get SIGTERM
    when the calling Python process dies. Stop with ``cluster.stop()``.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    base = Path(base_dir) if base_dir is not None else CACHE_DIR / f"cluster-{secrets.token_hex(3)}"
    lib = ensure_jars(log)
    cluster = KafkaCluster(
        directory=base,
        cluster_id=new_cluster_id(),
        sasl=sasl,
        admin_user=ADMIN_USER,
        admin_password=secrets.token_urlsafe(18).replace("-", "x").replace("_", "y"),
        heap=heap or (DEFAULT_HEAP if n == 1 else "384m"),
        detach=detach,
        lib=lib,
        extra_properties=dict(extra_properties or {}),
    )
    ports = free_ports(n * (3 if sasl else 2))
    for i in range(n):
        chunk = ports[i * (3 if sasl else 2) : (i + 1) * (3 if sasl else 2)]
        cluster.nodes.append(
            KafkaNode(
                cluster=cluster,
                node_id=i + 1,
                directory=base / f"node-{i + 1}",
                plaintext_port=chunk[0],
                controller_port=chunk[1],
                sasl_port=chunk[2] if sasl else None,
            )
        )
    cluster.format()
    cluster.state_file = state_file
    try:
        cluster.start(timeout=timeout)
    except BaseException:
        cluster.kill()
        raise
    return cluster
