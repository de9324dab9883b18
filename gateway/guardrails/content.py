"""Where text is in OpenAI request and response bodies: every message role, every text
content part, tool-call and function-call arguments, completion prompts and embedding
inputs. Tool-call arguments are JSON: each string in them is scanned on its own, and the
arguments are written again only when something in them was redacted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from llmrouter.gateway.guardrails import injection
from llmrouter.gateway.guardrails.engine import Action, Blocked, Scanner, scan
from llmrouter.gateway.guardrails.normalize import count_invisible

TextFn = Callable[[str, str], str]
"""(text, where it is) -> the text to keep."""


def text_fn(scanner: Scanner, findings: Counter[tuple[str, Action]]) -> TextFn:
    def check(text: str, where: str) -> str:
        try:
            result = scan(scanner, text)
        except Blocked as exc:
            exc.where = where
            findings[(exc.detector, "block")] += 1
            raise
        findings.update(result.findings)
        return result.text

    return check


def arguments(args: str, where: str, check: TextFn) -> str:
    try:
        doc = orjson.loads(args)
    except orjson.JSONDecodeError:
        return check(args, where)
    changed = False

    def walk(value: Any) -> Any:
        nonlocal changed
        if isinstance(value, str):
            new = check(value, where)
            changed = changed or new != value
            return new
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    out = walk(doc)
    return orjson.dumps(out).decode() if changed else args


def _calls(calls: Any, where: str, check: TextFn) -> Any:
    if not isinstance(calls, list):
        return calls
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            args = arguments(fn["arguments"], f"{where}[{i}].function.arguments", check)
            if args is not fn["arguments"]:
                call = {**call, "function": {**fn, "arguments": args}}
        out.append(call)
    return out


def message(msg: Any, where: str, check: TextFn) -> Any:
    if not isinstance(msg, dict):
        return msg
    out = dict(msg)
    content = msg.get("content")
    if isinstance(content, str):
        out["content"] = check(content, f"{where}.content")
    elif isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part = {**part, "text": check(part["text"], f"{where}.content[{j}].text")}
            parts.append(part)
        out["content"] = parts
    if "tool_calls" in msg:
        out["tool_calls"] = _calls(msg["tool_calls"], f"{where}.tool_calls", check)
    call = msg.get("function_call")
    if isinstance(call, dict) and isinstance(call.get("arguments"), str):
        args = arguments(call["arguments"], f"{where}.function_call.arguments", check)
        out["function_call"] = {**call, "arguments": args}
    return out


def request_body(
    body: dict[str, Any], scanner: Scanner, findings: Counter[tuple[str, Action]]
) -> dict[str, Any]:
    """The body with every text scanned. Raises Blocked (with ``where``)."""
    check = text_fn(scanner, findings)
    out = dict(body)
    messages = body.get("messages")
    if isinstance(messages, list):
        out["messages"] = [message(m, f"messages[{i}]", check) for i, m in enumerate(messages)]
    for name in ("prompt", "input"):
        value = body.get(name)
        if isinstance(value, str):
            out[name] = check(value, name)
        elif isinstance(value, list):
            out[name] = [
                check(v, f"{name}[{i}]") if isinstance(v, str) else v for i, v in enumerate(value)
            ]
    return out


def invisible_count(body: dict[str, Any]) -> int:
    """Invisible characters anywhere in the request's texts (one flag per request)."""
    total = 0

    def walk(value: Any) -> None:
        nonlocal total
        if isinstance(value, str):
            total += count_invisible(value)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    for name in ("messages", "prompt", "input"):
        walk(body.get(name))
    return total


INVISIBLE = injection.INVISIBLE


def response_doc(
    doc: dict[str, Any], scanner: Scanner, findings: Counter[tuple[str, Action]]
) -> dict[str, Any]:
    """A whole answer with every choice scanned. A choice that a ``block`` rule matches is
    emptied and ends with ``finish_reason: content_filter``, as Azure OpenAI does."""
    check = text_fn(scanner, findings)
    choices = doc.get("choices")
    if not isinstance(choices, list):
        return doc
    out = []
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            out.append(choice)
            continue
        try:
            if isinstance(choice.get("message"), dict):
                choice = {**choice, "message": message(choice["message"], "message", check)}
            elif isinstance(choice.get("text"), str):
                choice = {**choice, "text": check(choice["text"], "text")}
        except Blocked:
            choice = filtered_choice(choice, i)
        out.append(choice)
    return {**doc, "choices": out}


def filtered_choice(choice: dict[str, Any], i: int) -> dict[str, Any]:
    emptied: dict[str, Any] = {"index": choice.get("index", i), "finish_reason": "content_filter"}
    if "message" in choice:
        emptied["message"] = {"role": "assistant", "content": ""}
    else:
        emptied["text"] = ""
    return emptied
