"""`make run`, the README's first command, in its smoke mode: llama-server with the tiny
model and the gateway on examples/, one chat request through it, then everything stopped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.smoke.test_benchmarks import run
from tests.support.serve import free_port

pytestmark = [pytest.mark.smoke, pytest.mark.e2e]


def test_make_run(tmp_path: Path) -> None:
    out = run(
        ["make", "--no-print-directory", "run", "SMOKE=1"],
        tmp_path,
        PORT=str(free_port()),
        LLAMA_PORT=str(free_port()),
    )
    assert "llmrouter is serving examples/" in out
    answer = re.search(r"^\{.*\}$", out, re.MULTILINE)  # the chat completion, on one line
    assert answer, out
    reply = json.loads(answer.group(0))
    assert reply["object"] == "chat.completion"
    assert reply["usage"]["completion_tokens"] > 0
    assert out.rstrip().endswith("stopped")
