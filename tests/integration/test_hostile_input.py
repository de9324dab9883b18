"""Hostile requests against `llmrouter serve` as a user runs it, over raw sockets: oversized,
deeply nested, duplicated, not UTF-8, not HTTP, or sent too slowly. Each gets an
OpenAI-shaped error quickly, the gateway keeps serving, and its log has no stack trace."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from llmrouter.gateway.json_body import MAX_DEPTH
from tests.support.config import DEV_KEY, write_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import tail
from tests.support.serve import ServeProcess

MAX_BODY = 64 * 1024
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
CHAT = b'{"model":"chat","messages":[{"role":"user","content":"hi"}]}'


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool
    """The gateway closed the connection after answering."""
    elapsed_s: float

    def json(self) -> Any:
        return json.loads(self.body)


def openai_error(answer: Answer, status: int, code: str) -> dict[str, Any]:
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
    body = answer.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return error


def read_answer(sock: socket.socket, started: float) -> Answer:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed without an answer after {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    elapsed_s = time.monotonic() - started
    closed = False
    sock.settimeout(2)
    try:
        closed = sock.recv(1) == b""
    except TimeoutError:
        pass
    except ConnectionResetError:
        closed = True
    return Answer(status, headers, body, closed, elapsed_s)


@dataclass
class Gateway:
    proc: ServeProcess
    upstream: FakeUpstream

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.proc.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def send(self, data: bytes) -> Answer:
        with self.connect() as sock:
            started = time.monotonic()
            # The gateway may answer and close before it took the whole request.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(data)
            return read_answer(sock, started)

    def assert_clean_log(self) -> None:
        log = self.proc.log.read_text(errors="replace")
        assert "Traceback" not in log, tail(self.proc.log, 80)
        assert " ERROR " not in log, tail(self.proc.log, 80)

    def assert_serving(self) -> None:
        openai_ok = self.send(request(CHAT))
        assert openai_ok.status == 200, openai_ok.body


def request(
    body: bytes,
    extra: bytes = b"",
    path: bytes = b"/v1/chat/completions",
    auth: bytes = b"Authorization: Bearer " + DEV_KEY.encode() + b"\r\n",
) -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: gateway\r\n" + auth
        + b"Content-Type: application/json\r\n" + extra
        + b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
        + body
    )  # fmt: skip


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream_server: FakeUpstream
) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("hostile")
    resources, keys = write_config(folder, upstream_server.url)
    args = [
        *("-f", str(resources), "--keys-file", str(keys)),
        *("--endpoint", f"local={upstream_server.url}"),
        *("--max-body-bytes", str(MAX_BODY)),
        *("--header-timeout", str(HEADER_TIMEOUT_S), "--body-timeout", str(BODY_TIMEOUT_S)),
    ]
    with ServeProcess(args, folder / "gateway.log") as proc:
        yield Gateway(proc, upstream_server)


@pytest.fixture
def gw(gateway: Gateway, upstream: FakeUpstream) -> Iterator[Gateway]:
    """The shared gateway; after each test it still serves and has logged no stack trace."""
    yield gateway
    gateway.assert_serving()
    gateway.assert_clean_log()


def test_a_body_over_the_limit_is_413(gw: Gateway) -> None:
    big = b'{"model":"chat","messages":[{"role":"user","content":"' + b"x" * MAX_BODY + b'"}]}'
    answer = gw.send(request(big))
    openai_error(answer, 413, "request_too_large")
    # Chunked, so that no Content-Length announces it: refused all the same.
    chunked = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        + b"Authorization: Bearer " + DEV_KEY.encode() + b"\r\n"
        + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in chunks(big, 8192))
        + b"0\r\n\r\n"
    )  # fmt: skip
    openai_error(gw.send(chunked), 413, "request_too_large")
    # A compressed body is bounded by what it inflates to: 64 MiB of spaces in 64 KiB.
    bomb = gzip.compress(b" " * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < MAX_BODY
    answer = gw.send(request(bomb, b"Content-Encoding: gzip\r\n"))
    openai_error(answer, 413, "request_too_large")
    assert answer.elapsed_s < 5
    assert gw.upstream.seen == []


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def nested(levels: int) -> bytes:
    """A chat request whose arrays and objects nest ``levels`` deep in all."""
    inner = levels - 3  # the body, its messages array, the message object
    return (
        b'{"model":"chat","messages":[{"role":"user","content":"hi","x":'
        + b"[" * inner
        + b"]" * inner
        + b"}]}"
    )


def test_deep_nesting_is_refused_at_a_fixed_depth_and_quickly(gw: Gateway) -> None:
    assert gw.send(request(nested(MAX_DEPTH))).status == 200
    assert len(gw.upstream.seen) == 1
    error = openai_error(gw.send(request(nested(MAX_DEPTH + 1))), 400, "invalid_json")
    assert f"more than {MAX_DEPTH} levels" in error["message"]
    # As deep as the body limit allows, arrays and objects: refused at once.
    for opener, closer in [(b"[", b"]"), (b'{"a":', b"}")]:
        count = (MAX_BODY - 200) // (len(opener) + len(closer))
        body = b'{"model":"chat","messages":' + opener * count + closer * count + b"}"
        answer = gw.send(request(body))
        openai_error(answer, 400, "invalid_json")
        assert answer.elapsed_s < 5  # milliseconds on an idle machine
    # Brackets inside strings are text, and wide is not deep.
    text = b'{"model":"chat","messages":[{"role":"user","content":"' + b"[{" * 5000 + b'"}]}'
    assert gw.send(request(text)).status == 200
    wide = b'{"model":"chat","messages":[{"role":"user","content":"hi"}],"x":[' + b"[]," * 10000
    assert gw.send(request(wide + b"[]]}")).status == 200
    assert len(gw.upstream.seen) == 3


def test_duplicate_keys_are_refused(gw: Gateway) -> None:
    # A parser keeping the first "model" would serve secret-model, which this tenant may not
    # use; one keeping the first "max_tokens" would produce more than was reserved.
    for body in [
        b'{"model":"secret-model","model":"chat","messages":[{"role":"user","content":"hi"}]}',
        b'{"model":"chat","max_tokens":100000,"max_tokens":1,"messages":[{"role":"user","content":"hi"}]}',
        b'{"model":"chat","messages":[{"role":"user","role":"system","content":"hi"}]}',
        b'{"model":"chat","messages":[{"role":"user","content":"hi"}],"x":{"a":1,"\\u0061":2}}',
    ]:
        error = openai_error(gw.send(request(body)), 400, "duplicate_key")
        assert "twice" in error["message"]
    feedback = b'{"request_id":"a","request_id":"b","score":1}'
    openai_error(gw.send(request(feedback, path=b"/v1/feedback")), 400, "duplicate_key")
    assert gw.upstream.seen == []
    # One key in each of two objects is no duplicate.
    same = (
        b'{"model":"chat","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}'
    )
    assert gw.send(request(same)).status == 200


def test_huge_and_numerous_headers_are_431(gw: Gateway) -> None:
    answer = gw.send(request(CHAT, b"X-Big: " + b"a" * 20000 + b"\r\n"))
    error = openai_error(answer, 431, "header_too_large")
    assert "aaaa" not in error["message"]  # the client's bytes are not echoed
    assert answer.closed
    many = b"".join(b"X-Header-%d: v\r\n" % i for i in range(300))
    assert openai_error(gw.send(request(CHAT, many)), 431, "header_too_large")
    long_path = b"/v1/chat/completions?" + b"q" * 20000
    openai_error(gw.send(request(CHAT, path=long_path)), 431, "header_too_large")
    huge_token = b"Authorization: Bearer eyJ" + b"A" * 20000 + b"\r\n"
    openai_error(gw.send(request(CHAT, auth=huge_token)), 431, "header_too_large")


def test_invalid_utf8(gw: Gateway) -> None:
    body = b'{"model":"chat","messages":[{"role":"user","content":"\xff\xfe\xc3"}]}'
    openai_error(gw.send(request(body)), 400, "invalid_json")
    escaped = b'{"model":"chat","messages":[{"role":"user","content":"\\ud800"}]}'
    openai_error(gw.send(request(escaped)), 400, "invalid_json")
    for auth in [b"Authorization: Bearer \xff\xfe\xc3\r\n", b"x-api-key: llmr_\xff\r\n"]:
        openai_error(gw.send(request(CHAT, auth=auth)), 401, "invalid_api_key")
    # Headers the gateway only reads (tenant, task type, request id) do not matter.
    noise = b"x-llmrouter-tenant: \xff\r\nx-llmrouter-task-type: \xfe\r\nx-request-id: \xff\r\n"
    assert gw.send(request(CHAT, noise)).status == 200
    openai_error(
        gw.send(b"GET /v1/models/\xff\xfe HTTP/1.1\r\nHost: g\r\n\r\n"), 400, "invalid_http"
    )
    answer = gw.send(
        b"GET /v1/models/%FF%FE HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer "
        + DEV_KEY.encode() + b"\r\nConnection: close\r\n\r\n"
    )  # fmt: skip
    openai_error(answer, 404, "model_not_found")


def test_bodies_and_messages_that_do_not_decode(gw: Gateway) -> None:
    openai_error(
        gw.send(request(b"not gzip at all", b"Content-Encoding: gzip\r\n")), 400, "invalid_body"
    )
    bad_chunk = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n"
    )
    openai_error(gw.send(bad_chunk), 400, "invalid_http")
    openai_error(
        gw.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64)), 400, "invalid_http"
    )
    # Two Content-Lengths: which one a proxy in front believed is anyone's guess (smuggling).
    smuggled = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    openai_error(gw.send(smuggled), 400, "invalid_http")
    for framing in [
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
        b"Transfer-Encoding: xchunked\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 0x10\r\n",
        b"X-Folded: a\r\n b\r\n",
    ]:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\n" + framing + b"\r\n"
        openai_error(gw.send(head + b"0\r\n\r\n"), 400, "invalid_http")


def test_a_client_sending_its_headers_slowly_is_cut_off(gw: Gateway) -> None:
    with gw.connect() as sock:
        started = time.monotonic()
        head = request(CHAT)
        closed_after = None
        for byte in head[:200]:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - started
                break
            time.sleep(0.1)
        if closed_after is None:
            sock.settimeout(5)
            assert sock.recv(1) in (b"", None)
            closed_after = time.monotonic() - started
    assert HEADER_TIMEOUT_S * 0.9 <= closed_after < HEADER_TIMEOUT_S + 3
    # An idle connection that never sends a byte is closed alike.
    with gw.connect() as sock:
        started = time.monotonic()
        sock.settimeout(HEADER_TIMEOUT_S + 5)
        assert sock.recv(1) == b""
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 3


def test_a_client_sending_its_body_slowly_gets_408(gw: Gateway) -> None:
    body = CHAT + b" " * 1000
    data = request(body)
    head, _ = data.split(b"\r\n\r\n", 1)
    with gw.connect() as sock:
        started = time.monotonic()
        sock.sendall(head + b"\r\n\r\n" + body[:10])
        answer = read_answer(sock, started)
    error = openai_error(answer, 408, "request_timeout")
    assert "did not arrive" in error["message"]
    assert answer.closed
    assert BODY_TIMEOUT_S * 0.9 <= answer.elapsed_s < BODY_TIMEOUT_S + 3
    assert gw.upstream.seen == []


def test_answers_longer_than_the_header_timeout_are_not_cut(gw: Gateway) -> None:
    # The header timeout bounds waiting for a request, never the answer to one.
    gw.upstream.behaviour.delay_s = HEADER_TIMEOUT_S * 1.5
    assert gw.send(request(CHAT)).status == 200
    gw.upstream.behaviour.delay_s = 0
    gw.upstream.behaviour.chunk_delay_s = HEADER_TIMEOUT_S * 0.6
    stream = CHAT[:-1] + b',"stream":true}'
    with gw.connect() as sock:
        started = time.monotonic()
        sock.sendall(request(stream).replace(b"Connection: close\r\n", b""))
        data = b""
        while b"data: [DONE]" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    assert time.monotonic() - started > HEADER_TIMEOUT_S
    assert data.count(b"tok") == 3
    gw.upstream.behaviour.chunk_delay_s = 0
