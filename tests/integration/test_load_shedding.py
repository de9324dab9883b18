"""`llmrouter serve` under too much load, at shutdown and restart, and when clients leave:
a cap on requests in flight, a drain on SIGTERM, rolling restarts on SIGHUP, and client
disconnects that are ordinary events. Real processes; the fake upstream sets the pace."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import REPO
from tests.support.config import DEV_KEY, write_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import wait_until
from tests.support.serve import ServeProcess, llmrouter

HEADERS = {"Authorization": f"Bearer {DEV_KEY}"}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def serve(tmp_path: Path, upstream: FakeUpstream, *extra: str) -> ServeProcess:
    resources, keys = write_config(tmp_path, upstream.url)
    args = ["-f", str(resources), "--keys-file", str(keys), "--endpoint", f"local={upstream.url}"]
    return ServeProcess([*args, *extra], tmp_path / "serve.log")


def chat(url: str, stream: bool = False, client: httpx.Client | None = None) -> httpx.Response:
    """One chat completion on a new connection (or on ``client``'s), read to its end."""
    body = {**CHAT, "stream": stream}
    if client is not None:
        return client.post(f"{url}/v1/chat/completions", json=body, headers=HEADERS)
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=HEADERS, timeout=10)


def streamed_text(resp: httpx.Response) -> str:
    """The content of a chat stream; asserts it ended properly."""
    events = [e[len("data: ") :] for e in resp.text.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]", resp.text
    chunks = [orjson.loads(e) for e in events[:-1]]
    return "".join(c["choices"][0]["delta"]["content"] for c in chunks if c["choices"])


def metric_total(port: int, name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(w in line for w in wanted):
            total += float(line.split()[-1])
    return total


def in_background(n: int, call: Callable[[], httpx.Response]) -> list[object]:
    """Start ``n`` calls in threads; the list fills with their answers (or exceptions)."""
    results: list[object] = []

    def run() -> None:
        try:
            results.append(call())
        except Exception as exc:
            results.append(exc)

    for _ in range(n):
        threading.Thread(target=run, daemon=True).start()
    return results


def test_past_the_cap_requests_are_refused_at_once_with_503_overloaded(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.behaviour.delay_s = 3.0  # under the model's total timeout (5 s)
    with serve(tmp_path, upstream, "--max-in-flight", "3") as gw:
        slow = in_background(3, lambda: chat(gw.url))
        wait_until(lambda: upstream.in_flight == 3, 5, "three requests in flight")

        for _ in range(5):
            started = time.monotonic()
            refused = chat(gw.url)
            assert time.monotonic() - started < 0.5
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "1"
            error = refused.json()["error"]
            assert error["code"] == "overloaded" and error["type"] == "server_error"
            assert "3 requests in flight" in error["message"]
        # Probes are never refused: a full gateway is still alive and ready.
        assert httpx.get(f"{gw.url}/healthz").status_code == 200
        assert httpx.get(f"{gw.url}/readyz").status_code == 200

        wait_until(lambda: len(slow) == 3, 5, "the slow requests")
        assert [r.status_code for r in slow if isinstance(r, httpx.Response)] == [200] * 3
        upstream.behaviour.delay_s = 0
        assert chat(gw.url).status_code == 200  # the slots are free again
        assert metric_total(gw.metrics_port, "llmrouter_overloaded_total") == 5
        assert upstream.peak_in_flight == 3


def test_the_cap_applies_to_each_worker_process(
    upstream: FakeUpstream, redis_url: str, tmp_path: Path
) -> None:
    upstream.behaviour.delay_s = 3.0  # under the model's total timeout (5 s)
    log = tmp_path / "serve.log"
    extra = ["--workers", "2", "--state", redis_url, "--max-in-flight", "2"]
    with serve(tmp_path, upstream, *extra) as gw:
        wait_until(lambda: log.read_text().count(" listens") == 2, 10, "both workers")
        # 20 connections at once: the kernel spreads them over both workers (all 20 on
        # one worker, or one on one, happens once in ~25,000 runs).
        clients = [httpx.Client(timeout=10) for _ in range(20)]  # made before the clock runs
        with ThreadPoolExecutor(20) as pool:
            answers = pool.map(lambda client: chat(gw.url, client=client), clients)
            statuses = sorted(r.status_code for r in answers)
        for client in clients:
            client.close()
        assert statuses == [200] * 4 + [503] * 16


def test_sigterm_drains_requests_and_streams_in_flight_then_exits_0(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.behaviour.delay_s = 1.0
    upstream.behaviour.chunks = 4
    upstream.behaviour.chunk_delay_s = 0.25
    gw = serve(tmp_path, upstream).start()
    assert gw.proc is not None
    try:
        kept = httpx.Client(timeout=10)  # one kept-alive connection, opened before SIGTERM
        assert kept.get(f"{gw.url}/readyz").status_code == 200
        answers = in_background(3, lambda: chat(gw.url))
        streams = in_background(1, lambda: chat(gw.url, stream=True))
        wait_until(lambda: upstream.in_flight == 4, 5, "requests and a stream in flight")

        gw.proc.send_signal(signal.SIGTERM)
        readiness: list[httpx.Response] = []

        def not_ready() -> bool:
            readiness.append(kept.get(f"{gw.url}/readyz"))
            return readiness[-1].is_error

        wait_until(not_ready, 2, "readiness to turn false")
        assert readiness[-1].status_code == 503
        assert readiness[-1].json() == {"status": "draining"}
        assert readiness[-1].headers["Connection"] == "close"
        wait_until(lambda: _refused(gw.port), 2, "new connections to be refused")

        assert gw.proc.wait(10) == 0
        assert [r.status_code for r in answers if isinstance(r, httpx.Response)] == [200] * 3
        (stream,) = streams
        assert isinstance(stream, httpx.Response) and stream.status_code == 200
        assert streamed_text(stream) == "tok0 tok1 tok2 tok3 "
        assert _refused(gw.port)
        log = gw.log.read_text()
        assert "draining: 4 requests in flight" in log
        assert "Traceback" not in log and " ERROR " not in log
    finally:
        gw.stop()


def test_a_second_sigterm_ends_the_drain_at_once(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.behaviour.delay_s = 4.5  # under the model's total timeout (5 s)
    gw = serve(tmp_path, upstream).start()
    assert gw.proc is not None
    try:
        slow = in_background(1, lambda: chat(gw.url))
        wait_until(lambda: upstream.in_flight == 1, 5, "a request in flight")
        gw.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "draining: 1 requests in flight" in gw.log.read_text(), 5, "drain")
        gw.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert gw.proc.wait(10) == 0
        assert time.monotonic() - started < 2.5  # the slow request had 4 s left
        assert "second signal: cutting 1 requests still in flight" in gw.log.read_text()
        wait_until(lambda: len(slow) == 1, 5, "the cut request")
        assert isinstance(slow[0], httpx.HTTPError)
    finally:
        gw.stop()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sighup_replaces_workers_one_at_a_time_without_a_failed_request(
    upstream: FakeUpstream, redis_url: str, tmp_path: Path
) -> None:
    upstream.behaviour.delay_s = 0.05
    log = tmp_path / "serve.log"
    with serve(tmp_path, upstream, "--workers", "2", "--state", redis_url) as gw:
        assert gw.proc is not None
        wait_until(lambda: log.read_text().count(" listens") >= 2, 10, "both workers")
        first = _children(gw.proc.pid)
        failures: list[str] = []
        answered = [0]
        done = threading.Event()

        def load(keep_alive: bool) -> None:
            with httpx.Client(timeout=10) as client:
                while not done.is_set():
                    try:
                        resp = chat(gw.url, client=client if keep_alive else None)
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        continue
                    if resp.status_code != 200:
                        failures.append(f"{resp.status_code} {resp.text}")
                    answered[0] += 1

        threads = [threading.Thread(target=load, args=(i % 2 == 0,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            os.kill(gw.proc.pid, signal.SIGHUP)
            wait_until(lambda: "restart done" in log.read_text(), 20, "the restart")
            time.sleep(0.3)
        finally:
            done.set()
            for t in threads:
                t.join(10)
        assert failures == []
        assert answered[0] > 20
        now = _children(gw.proc.pid)
        assert len(now) == 2 and not now & first

        # One at a time: each old worker drains only once its replacement listens, and the
        # next replacement starts only once it has gone.
        said = [line.split(": ", 1)[-1] for line in log.read_text().splitlines()]
        said = said[said.index("SIGHUP: restarting 2 workers one at a time") + 1 :]
        steps = [s for s in said if s.startswith(("started worker", "draining worker", "worker"))]
        new_a, new_b = (int(s.split()[2]) for s in steps if s.startswith("started worker"))
        a, b = sorted(first)
        assert steps == [
            f"started worker {new_a} to replace worker {a}",
            f"worker {new_a} listens",
            f"draining worker {a}",
            f"worker {a} drained and exited (0)",
            f"started worker {new_b} to replace worker {b}",
            f"worker {new_b} listens",
            f"draining worker {b}",
            f"worker {b} drained and exited (0)",
        ]
        assert "Traceback" not in log.read_text()


def _children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _disconnect(port: int, stream: bool, after: Callable[[socket.socket], object]) -> None:
    """Send a chat request on a raw connection, then close it once ``after`` returns."""
    body = orjson.dumps({**CHAT, "stream": stream})
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
            + f"Authorization: Bearer {DEV_KEY}\r\n".encode()
            + b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        after(sock)


def test_a_client_that_disconnects_is_an_ordinary_event(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    with serve(tmp_path, upstream, "--access-log") as gw:
        # Before the answer: the upstream takes 0.5 s, the client leaves after 0.1 s.
        upstream.behaviour.delay_s = 0.5
        _disconnect(gw.port, False, lambda _: time.sleep(0.1))
        wait_until(lambda: "status=499" in gw.log.read_text(), 5, "the first 499")

        # Mid-stream: the client reads the first event and leaves.
        upstream.behaviour.delay_s = 0
        upstream.behaviour.chunks = 20
        upstream.behaviour.chunk_delay_s = 0.1
        _disconnect(gw.port, True, lambda sock: sock.recv(4096))
        wait_until(lambda: gw.log.read_text().count("status=499") == 2, 5, "the second 499")
        time.sleep(0.3)  # anything logged late would be too

        assert metric_total(gw.metrics_port, "llmrouter_requests_total", code="499") == 2
        log = gw.log.read_text()
        assert "Traceback" not in log and " ERROR " not in log and " WARNING " not in log
        assert log.count("status=499") == 2  # one INFO line each, in the access log


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_max_in_flight_refuses_what_is_not_a_number_of_requests(value: str) -> None:
    done = subprocess.run(
        llmrouter("serve", "-f", "examples", "--max-in-flight", value),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert f"argument --max-in-flight: {value!r}: expected a number of requests (1 or more)" in (
        done.stderr
    )


def test_drain_timeout_refuses_what_is_not_a_duration() -> None:
    done = subprocess.run(
        llmrouter("serve", "-f", "examples", "--drain-timeout", "0"),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert "argument --drain-timeout: '0' must be a number greater than zero" in done.stderr
