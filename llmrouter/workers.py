"""Several gateway processes on one port: one worker per core.

Each worker is a fork of this process that builds its own app and listens on the port with
SO_REUSEPORT, so the kernel spreads connections over the workers and no process relays
traffic. Workers share nothing in memory: limits, budgets and usage must be in Redis.
Counters and histograms are summed through prometheus_client's multiprocess files, in a
folder this supervisor creates and removes.

A worker that dies is replaced. One that dies in its first seconds would die again (port
taken, Redis URL wrong, a bug at start): the supervisor then stops the others and fails.
SIGTERM drains every worker, then the supervisor exits 0; SIGHUP replaces the workers one
at a time, each new one listening before an old one drains, so no request fails meanwhile.
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


def serve_workers(
    count: int, serve: Callable[[Callable[[], None]], None], host: str, port: int
) -> int:
    """Run ``serve`` in ``count`` worker processes; return the exit status once all have
    stopped. ``serve`` blocks until SIGTERM has drained its process, and calls the function
    it is given once it listens."""
    check_port(host, port)
    metrics_dir = tempfile.mkdtemp(prefix="llmrouter-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        return _Supervisor(count, serve).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


# A worker tells the supervisor it listens with a real-time signal: those are queued, so
# workers starting together are all heard, and each says which process sent it.
_LISTENING = signal.SIGRTMIN
# The supervisor takes these synchronously (sigtimedwait): a worker's end, a request to
# stop or restart, and a worker saying it listens.
_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, _LISTENING}


class _Supervisor:
    def __init__(self, count: int, serve: Callable[[Callable[[], None]], None]) -> None:
        self.count = count
        self.serve = serve
        self.workers: dict[int, float] = {}  # pid → when it started (monotonic)
        self.stopping = False
        self.failed = False
        # A rolling restart (SIGHUP) replaces the workers of to_replace one at a time: it
        # starts a replacement, and once that one listens, drains the old worker (retiring)
        # and waits for it to exit before the next. Capacity never drops below ``count``.
        self.restarting = False
        self.to_replace: list[int] = []
        self.replacement: int | None = None
        self.retiring: int | None = None

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        for _ in range(self.count):
            self._spawn()
        logger.info("%d workers serving: %s", self.count, " ".join(map(str, self.workers)))
        while self.workers:
            info = signal.sigtimedwait(_SIGNALS, 0.5)
            if info is not None:
                self._on_signal(info.si_signo, info.si_pid)
            self._reap()
            self._restart_next()
        return 1 if self.failed else 0

    def _on_signal(self, signum: int, sender: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stop()
        elif signum == signal.SIGHUP and not self.stopping:
            if self.restarting:
                logger.warning("SIGHUP: a restart is already under way")
                return
            self.restarting = True
            self.to_replace = sorted(self.workers)
            logger.info("SIGHUP: restarting %d workers one at a time", len(self.to_replace))
        elif signum == _LISTENING:
            self._listening(sender)

    def _listening(self, pid: int) -> None:
        logger.info("worker %d listens", pid)
        if pid == self.replacement and self.to_replace:
            old = self.to_replace.pop(0)
            self.replacement = None
            self.retiring = old
            logger.info("draining worker %d", old)
            with contextlib.suppress(ProcessLookupError):
                os.kill(old, signal.SIGTERM)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            started = self.workers.pop(pid, None)
            if started is None:
                continue
            _forget_metrics_of(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            if pid == self.retiring:
                self.retiring = None
                logger.info("worker %d drained and exited (%d)", pid, code)
                continue
            if pid == self.replacement:
                logger.error(
                    "worker %d exited (%d) before it listened: restart abandoned, "
                    "the others keep serving",
                    pid,
                    code,
                )
                self.replacement = None
                self.to_replace.clear()
                self.restarting = False
                continue
            if pid in self.to_replace:
                self.to_replace.remove(pid)
            if time.monotonic() - started < EARLY_EXIT_S:
                logger.error("worker %d exited (%d) as it started: stopping all", pid, code)
                self.failed = True
                self._stop()
                continue
            logger.warning("worker %d exited (%d); starting another", pid, code)
            self._spawn()

    def _restart_next(self) -> None:
        if not self.restarting or self.stopping:
            return
        if self.replacement is not None or self.retiring is not None:
            return
        self.to_replace = [pid for pid in self.to_replace if pid in self.workers]
        if not self.to_replace:
            self.restarting = False
            logger.info("restart done: workers %s", " ".join(map(str, sorted(self.workers))))
            return
        self.replacement = self._spawn()
        logger.info("started worker %d to replace worker %d", self.replacement, self.to_replace[0])

    def _stop(self) -> None:
        self.stopping = True
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _spawn(self) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        supervisor = os.getpid()
        pid = os.fork()
        if pid:
            self.workers[pid] = time.monotonic()
            return pid
        os._exit(_worker(self.serve, supervisor))


def _worker(serve: Callable[[Callable[[], None]], None], supervisor: int) -> int:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor's to act on, not ours
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    _die_with(supervisor)
    _count_metrics_in_files()
    try:
        serve(lambda: os.kill(supervisor, _LISTENING))
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
