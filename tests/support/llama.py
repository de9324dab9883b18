"""A real llama.cpp llama-server, built by hack/build-llama-server.sh, with the tiny model
that hack/tiny_gguf.py generates."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support.processes import http_ok, stop, tail, wait_until
from tests.support.serve import free_port

REPO = Path(__file__).resolve().parents[2]


def _hack(*args: str) -> str:
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(
        [str(REPO / "hack" / "build-llama-server.sh"), *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return out.stdout.strip()


def llama_server_binary() -> Path:
    """The built binary: $LLAMA_SERVER, or built now (minutes, once per version)."""
    return Path(os.environ.get("LLAMA_SERVER") or _hack())


def tiny_model(directory: Path) -> Path:
    vocab = Path(_hack("--print-vocab-dir")) / "ggml-vocab-llama-spm.gguf"
    out = directory / "tiny.gguf"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "hack" / "tiny_gguf.py"),
            "--vocab",
            str(vocab),
            "--out",
            str(out),
        ],
        check=True,
    )
    return out


class LlamaServer:
    def __init__(self, binary: Path, model: Path, log: Path, *args: str) -> None:
        self.binary, self.model, self.log, self.args = binary, model, log, args
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.load_s = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        cmd = [
            str(self.binary),
            "-m",
            str(self.model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--threads",
            "2",
            *self.args,
        ]
        started = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        proc = self.proc
        health = f"http://127.0.0.1:{self.port}/health"
        wait_until(lambda: http_ok(health) or proc.poll() is not None, 60, "llama-server")
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited:\n{tail(self.log)}")
        self.load_s = time.monotonic() - started
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
