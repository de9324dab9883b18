"""Where the benchmarks' processes write their output: one log file per process, in a folder
that outlives the run and whose path is printed at the end. A gateway logs every client that
hangs up as a load generator stops; on the terminal that would bury the table."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path


class Logs:
    def __init__(self, name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"llmrouter-{name}-"))

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    def popen(self, name: str, cmd: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """``cmd`` started with its stdout and stderr in ``name``.log."""
        with self.path(name).open("ab") as out:
            return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs
            )

    def tail(self, name: str, lines: int = 20) -> str:
        try:
            text = self.path(name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Logs:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        self.report(failed=kind is not None)

    def report(self, failed: bool = False) -> None:
        """The folder's path; after a failure, the end of each log too (on stderr)."""
        if failed:
            for log in sorted(self.dir.glob("*.log")):
                print(f"--- {log} (last lines)\n{self.tail(log.stem)}", file=sys.stderr)
        print(f"\nlogs of each process: {self.dir}", file=sys.stderr if failed else sys.stdout)
