"""Where audit lines go: a rotating file (the system of record) and an optional copy.

The file is written with plain ``os.write`` on an ``O_APPEND`` descriptor, a batch of whole
lines at a time; a batch that fails is cut back off, so the file never keeps half of one.
One process writes one file: a process that finds the file locked by another (a second
worker given the same path) writes ``PATH.1``, ``PATH.2``… instead.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol

logger = logging.getLogger(__name__)


class Sink(Protocol):
    def write(self, lines: Sequence[bytes], durable: bool) -> None:
        """Append the lines; with ``durable``, on disk before returning. Raises OSError."""

    def close(self) -> None: ...


class RotatingFile:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 100 * 1024 * 1024,
        max_age_s: float = 24 * 3600.0,
        retention_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.requested = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.retention_s = retention_s
        self.clock = clock
        self.path, self._fd = self._open_free(path)
        self._opened_at = clock()
        self._size = os.fstat(self._fd).st_size
        if self._size and not self._ends_with_newline():
            # A crash tore the last line: it stays the last line of its file, where
            # `audit verify` reads it as torn rather than tampered.
            self._rotate()

    def _open_free(self, path: Path) -> tuple[Path, int]:
        path.parent.mkdir(parents=True, exist_ok=True)
        for n in range(64):
            candidate = path if n == 0 else path.with_name(f"{path.name}.{n}")
            fd = os.open(candidate, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return candidate, fd
        raise OSError(f"{path}: 64 processes already write this audit file")

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def write(self, lines: Sequence[bytes], durable: bool) -> None:
        if self._size and (
            self._size >= self.max_bytes or self.clock() - self._opened_at >= self.max_age_s
        ):
            self._rotate()
        data = b"".join(line + b"\n" for line in lines)
        start = self._size
        try:
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, data[written:])
            if durable:
                os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                logger.exception("audit file %s: cannot cut back a failed write", self.path)
            raise
        self._size += len(data)

    def _rotate(self) -> None:
        stamp = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y%m%dT%H%M%S%fZ")
        rotated = self.path.with_name(f"{self.path.name}.{stamp}")
        os.rename(self.path, rotated)
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._opened_at, self._size = self.clock(), 0
        logger.info("audit file rotated to %s", rotated)
        self._expire()

    def _expire(self) -> None:
        if self.retention_s is None:
            return
        horizon = self.clock() - self.retention_s
        for old in self.path.parent.glob(f"{self.path.name}.*T*Z"):
            try:
                if old.stat().st_mtime < horizon:
                    old.unlink()
                    logger.info("audit file %s removed after the retention period", old)
            except OSError:
                logger.warning("audit file %s could not be removed", old)

    def files(self) -> list[Path]:
        """The audit files of every process given this path, rotated ones included."""
        return sorted(self.requested.parent.glob(f"{self.requested.name}*"))

    def close(self) -> None:
        os.close(self._fd)


class Copy:
    """A copy of every line on a stream (stdout, for a SIEM's log collector); never the
    system of record, so a failure to write it is logged, not raised."""

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream or sys.stdout.buffer

    def write(self, lines: Sequence[bytes], durable: bool) -> None:
        try:
            self.stream.write(b"".join(line + b"\n" for line in lines))
            self.stream.flush()
        except (OSError, ValueError):
            logger.warning("audit copy could not be written", exc_info=True)

    def close(self) -> None:
        pass
