"""Several gateway processes on one port: one worker per core.

Each worker is a fork of this process that builds its own app and listens on the port with
SO_REUSEPORT, so the kernel spreads connections over the workers and no process relays
traffic. Workers share nothing in memory: limits, budgets and usage must be in Redis.
Counters and histograms are summed through prometheus_client's multiprocess files, in a
folder this supervisor creates and removes.

A worker that dies is replaced. One that dies in its first seconds would die again (port
taken, Redis URL wrong, a bug at start): the supervisor then stops the others and fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger(__name__)

EARLY_EXIT_S = 5.0
"""A worker that exits sooner than this after its start is not restarted."""

_PR_SET_PDEATHSIG = 1


class PortUnavailable(OSError):
    pass


def check_port(host: str, port: int) -> None:
    """Fail before forking when the port cannot be shared (taken by another program)."""
    try:
        with socket.create_server((host, port), reuse_port=True):
            pass
    except OSError as exc:
        raise PortUnavailable(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def serve_workers(count: int, serve: Callable[[], None], host: str, port: int) -> int:
    """Run ``serve`` (which blocks until SIGTERM or SIGINT) in ``count`` worker processes;
    return the exit status once all have stopped."""
    check_port(host, port)
    metrics_dir = tempfile.mkdtemp(prefix="llmrouter-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        return _Supervisor(count, serve).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


class _Supervisor:
    def __init__(self, count: int, serve: Callable[[], None]) -> None:
        self.count = count
        self.serve = serve
        self.workers: dict[int, float] = {}  # pid → when it started (monotonic)
        self.stopping = False
        self.failed = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for _ in range(self.count):
            self._spawn()
        logger.info("%d workers serving: %s", self.count, " ".join(map(str, self.workers)))
        while self.workers:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            started = self.workers.pop(pid, None)
            if started is None:
                continue
            _forget_metrics_of(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            if time.monotonic() - started < EARLY_EXIT_S:
                logger.error("worker %d exited (%d) as it started: stopping all", pid, code)
                self.failed = True
                self._stop()
                continue
            logger.warning("worker %d exited (%d); starting another", pid, code)
            self._spawn()
        return 1 if self.failed else 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop()

    def _stop(self) -> None:
        self.stopping = True
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _spawn(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        supervisor = os.getpid()
        pid = os.fork()
        if pid:
            self.workers[pid] = time.monotonic()
            return
        os._exit(_worker(self.serve, supervisor))


def _worker(serve: Callable[[], None], supervisor: int) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _die_with(supervisor)
    _count_metrics_in_files()
    try:
        serve()
    except BaseException:
        logger.exception("worker %d failed", os.getpid())
        return 1
    finally:
        logging.shutdown()
    return 0


def _die_with(supervisor: int) -> None:
    """SIGTERM when the supervisor goes, even by SIGKILL: no orphan keeps the port."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != supervisor:  # it went before prctl took effect
            os._exit(0)


def _count_metrics_in_files() -> None:
    # prometheus_client picks its value class when it is imported, in the supervisor,
    # before PROMETHEUS_MULTIPROC_DIR was set: pick again in the worker.
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def _forget_metrics_of(pid: int) -> None:
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
