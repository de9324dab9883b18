"""A real Jaeger v2 (hack/build-jaeger.sh) on free loopback ports: an OTLP/HTTP receiver whose
query API reads back the spans it received."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from tests.support.processes import stop, wait_until
from tests.support.serve import free_port

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [jaeger_storage_exporter]}}
  telemetry: {{metrics: {{level: none}}}}
extensions:
  jaeger_query:
    storage: {{traces: memstore}}
    http: {{endpoint: "127.0.0.1:{query}"}}
    grpc: {{endpoint: "127.0.0.1:{grpc}"}}
  jaeger_storage:
    backends: {{memstore: {{memory: {{max_traces: 10000}}}}}}
receivers:
  otlp:
    protocols: {{http: {{endpoint: "127.0.0.1:{otlp}"}}}}
processors:
  batch: {{timeout: 50ms}}
exporters:
  jaeger_storage_exporter: {{trace_storage: memstore}}
"""


def jaeger_binary() -> str:
    found = os.environ.get("JAEGER")
    if found:
        return found
    out = subprocess.run(
        [str(REPO / "hack" / "build-jaeger.sh")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


class Jaeger:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="llmrouter-jaeger-"))
        self.otlp_port, self.query_port = free_port(), free_port()
        config = CONFIG.format(otlp=self.otlp_port, query=self.query_port, grpc=free_port())
        (self.dir / "config.yaml").write_text(config)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def otlp_url(self) -> str:
        return f"http://127.0.0.1:{self.otlp_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def start(self) -> Jaeger:
        log = (self.dir / "jaeger.log").open("wb")
        self.proc = subprocess.Popen(
            [jaeger_binary(), "--config", str(self.dir / "config.yaml")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: self._answers("/api/services"), 60, "jaeger to answer")
        return self

    def _answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.query_url + path, timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans of a trace, each with its tags as a dict; [] until it has arrived."""
        try:
            with urllib.request.urlopen(f"{self.query_url}/api/traces/{trace_id}", timeout=2) as r:
                doc = orjson.loads(r.read())
        except OSError:
            return []
        spans: list[dict[str, Any]] = []
        for found in doc.get("data") or []:
            for span in found["spans"]:
                span["tags"] = {t["key"]: t["value"] for t in span.get("tags", [])}
                spans.append(span)
        return spans

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
