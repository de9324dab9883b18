"""A stream gives exactly the text and findings of the whole answer, for every split."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import orjson
import pytest

from llmrouter.gateway.guardrails.content import response_doc
from llmrouter.gateway.guardrails.detectors import BUILTIN
from llmrouter.gateway.guardrails.engine import Action, Blocked, Rule, Scanner, scan
from llmrouter.gateway.guardrails.sse import StreamGuard
from llmrouter.gateway.guardrails.stream import TextStream
from tests.unit.test_guardrails_detect import _PEM, LOOK_ALIKES, TRUE

SCANNER = Scanner(tuple(Rule(d, "redact", i) for i, d in enumerate(BUILTIN.values())))


def _text(rng: random.Random) -> str:
    values = [v for _, v in TRUE] + LOOK_ALIKES
    noise = ["", " ", ", ", "\n", "-", "x", "é", "e\u0301", "\u200b", "ﬁ", "\uff1a", "@", "+"]
    parts = []
    for _ in range(rng.randint(5, 25)):
        parts.append(rng.choice(values))
        parts.append(rng.choice(noise) + rng.choice([" ", "; ", " and ", ""]))
    return "".join(parts)


def _split(text: str, rng: random.Random | None) -> list[str]:
    pieces = []
    i = 0
    while i < len(text):
        k = 1 if rng is None else rng.choice([1, 2, 3, 5, 8, 13, 40])
        pieces.append(text[i : i + k])
        i += k
    return pieces


def _streamed(pieces: list[str]) -> tuple[str, Counter[tuple[str, Action]]]:
    findings: Counter[tuple[str, Action]] = Counter()
    stream = TextStream(SCANNER, findings)
    out = [stream.feed(p) for p in pieces]
    out.append(stream.finish())
    return "".join(out), findings


@pytest.mark.parametrize("seed", range(40))
def test_stream_equals_whole_for_random_splits(seed: int) -> None:
    rng = random.Random(seed)
    text = _text(rng)
    whole = scan(SCANNER, text)
    for split in (None, rng):
        out, findings = _streamed(_split(text, split))
        assert out == whole.text
        assert findings == whole.findings


def test_every_split_point_of_a_private_key() -> None:
    text = f"key:\n{_PEM}\nmail a@example.com done"
    whole = scan(SCANNER, text).text
    for cut in range(len(text) + 1):
        assert _streamed([text[:cut], text[cut:]])[0] == whole


def test_release_is_early_and_bounded() -> None:
    findings: Counter[tuple[str, Action]] = Counter()
    stream = TextStream(SCANNER, findings)
    out = stream.feed("The quick brown fox jumps over the lazy dog. ")
    # Plain prose is released up to the word still being written at most.
    assert out.startswith("The quick brown fox jumps over the lazy")
    held = stream.feed("a" * 5000 + " ")
    assert len(held) >= 5000 - max(d.hold for d in BUILTIN.values() if d.name != "private_key")


def test_block_stops_before_the_value_is_released() -> None:
    scanner = Scanner((Rule(BUILTIN["aws_access_key"], "block", 0),))
    stream = TextStream(scanner, Counter())
    released = ""
    with pytest.raises(Blocked):
        for ch in "ok here AKIAIOSFODNN7EXAMPLE and more":
            released += stream.feed(ch)
    assert "AKIA" not in released


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _decode(events: list[bytes]) -> tuple[str, str, str | None]:
    content, args, finish = "", "", None
    for event in events:
        if not event.startswith(b"data: {"):
            continue
        for choice in orjson.loads(event[6:])["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                args += call.get("function", {}).get("arguments", "")
            finish = choice["finish_reason"] or finish
    return content, args, finish


@pytest.mark.parametrize("seed", range(10))
def test_sse_content_and_tool_arguments_equal_the_whole_answer(seed: int) -> None:
    rng = random.Random(seed)
    content = _text(rng)
    args = orjson.dumps({"to": "alice@example.com", "note": _text(rng)}).decode()
    whole = response_doc(
        {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "tool_calls": [
                            {
                                "id": "t",
                                "type": "function",
                                "function": {"name": "send", "arguments": args},
                            }
                        ],
                    },
                }
            ]
        },
        SCANNER,
        Counter(),
    )["choices"][0]["message"]
    guard = StreamGuard(SCANNER)
    events = guard.event(_chunk({"role": "assistant", "content": ""}))
    for piece in _split(content, rng):
        events += guard.event(_chunk({"content": piece}))
    first = {
        "index": 0,
        "id": "t",
        "type": "function",
        "function": {"name": "send", "arguments": ""},
    }
    events += guard.event(_chunk({"tool_calls": [first]}))
    for piece in _split(args, rng):
        events += guard.event(
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        )
    events += guard.event(_chunk({}, "tool_calls"))
    events += guard.event(b"data: [DONE]\n\n")
    got_content, got_args, finish = _decode(events)
    assert got_content == whole["content"]
    assert got_args == whole["tool_calls"][0]["function"]["arguments"]
    assert got_args.startswith('{"to":"[REDACTED:email]"')
    assert finish == "tool_calls"
    assert events[-1] == b"data: [DONE]\n\n"


def test_sse_block_ends_with_content_filter_and_error() -> None:
    guard = StreamGuard(Scanner((Rule(BUILTIN["openai_key"], "block", 0),)))
    events: list[bytes] = []
    with pytest.raises(Blocked) as blocked:
        for ch in "your key is sk-proj-abcdefghijklmnopqrstuvwxyz0123 ok":
            events += guard.event(_chunk({"content": ch}))
    events += guard.blocked(blocked.value)
    content, _, finish = _decode(events[:-1])
    assert "sk-proj" not in content
    assert finish == "content_filter"
    error = orjson.loads(events[-1][6:])["error"]
    assert error["code"] == "content_filter" and error["type"] == "invalid_request_error"


def test_tenant_pattern_holds_back_only_its_own_characters() -> None:
    from llmrouter.gateway.guardrails.custom import custom_detector

    scanner = Scanner((Rule(custom_detector("ticket", r"TCK-[0-9]{6}", 10), "redact", 0),))
    stream = TextStream(scanner, Counter())
    assert stream.feed("Hello there") == "Hello there"
    text = "see TCK-123456 and TCK-12345 or xTCK-654321."
    whole = scan(scanner, text).text
    assert whole == "see [REDACTED:custom:ticket] and TCK-12345 or x[REDACTED:custom:ticket]."
    for seed in range(5):
        assert _streamed_with(scanner, _split(text, random.Random(seed))) == whole


def _streamed_with(scanner: Scanner, pieces: list[str]) -> str:
    stream = TextStream(scanner, Counter())
    return "".join([stream.feed(p) for p in pieces] + [stream.finish()])


def test_a_failing_detector_fails_closed() -> None:
    class Broken:
        def finditer(self, text: str, pos: int = 0, endpos: int = 0) -> Any:
            raise RuntimeError("engine out of memory")

    from llmrouter.gateway.guardrails.detectors import Detector
    from llmrouter.gateway.guardrails.engine import DetectorFailed

    scanner = Scanner((Rule(Detector("broken", Broken(), max_length=5), "redact", 0),))
    with pytest.raises(DetectorFailed):
        scan(scanner, "anything")
    guard = StreamGuard(scanner)
    with pytest.raises(DetectorFailed) as failed:
        guard.event(_chunk({"content": "anything at all"}))
    events = guard.blocked(failed.value)
    assert orjson.loads(events[-1][6:])["error"]["code"] == "content_filter"


def test_a_word_is_held_only_when_a_match_could_begin_with_it() -> None:
    from llmrouter.gateway.guardrails.detectors import SECRETS

    secrets = Scanner(tuple(Rule(BUILTIN[n], "redact", i) for i, n in enumerate(SECRETS)))
    stream = TextStream(secrets, Counter())
    assert stream.feed("Hello") == "Hello"
    assert stream.feed(" there sk") == " there "
    assert stream.feed("ip") == "skip"
    with_email = Scanner((Rule(BUILTIN["email"], "redact", 0),))
    assert TextStream(with_email, Counter()).feed("Hello") == ""  # it could be bob's local part


@pytest.mark.parametrize("seed", range(20))
def test_stream_equals_whole_on_digit_soup(seed: int) -> None:
    # Runs of digits and separators make the number detectors' matches overlap, fail their
    # checksums and start everywhere: the hardest case for choosing where to cut.
    rng = random.Random(seed)
    alphabet = "0123456789" * 4 + " -.()+/ABDEXYZ@ax\n"
    parts = [rng.choice(alphabet) for _ in range(300)]
    for _ in range(4):
        parts.insert(rng.randrange(len(parts)), rng.choice([v for _, v in TRUE]))
    text = "".join(parts)
    whole = scan(SCANNER, text)
    for split in (None, rng, rng):
        out, findings = _streamed(_split(text, split))
        assert out == whole.text
        assert findings == whole.findings


def test_completions_stream_text_is_guarded() -> None:
    guard = StreamGuard(SCANNER)
    events: list[bytes] = []
    for piece in ["write to ", "bob@exa", "mple.com", " now"]:
        chunk = {"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": piece}]}
        events += guard.event(b"data: " + orjson.dumps(chunk) + b"\n\n")
    events += guard.event(b"data: [DONE]\n\n")
    text = "".join(
        c.get("text") or ""
        for e in events
        if e.startswith(b"data: {")
        for c in orjson.loads(e[6:])["choices"]
    )
    assert text == "write to [REDACTED:email] now"
