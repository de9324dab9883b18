"""The gateway pods the operator runs: their cap on requests in flight and their drain."""

from __future__ import annotations

from typing import Any

from llmrouter.operator.render import render_gateway_deployment
from llmrouter.operator.settings import OperatorSettings


def _pod(settings: OperatorSettings) -> dict[str, Any]:
    pod: dict[str, Any] = render_gateway_deployment(settings)["spec"]["template"]["spec"]
    return pod


def _args(settings: OperatorSettings) -> list[str]:
    args: list[str] = _pod(settings)["containers"][0]["args"]
    return args


def test_max_in_flight_reaches_the_gateway_only_when_it_is_not_the_default() -> None:
    capped = _args(OperatorSettings(gateway_max_in_flight=64))
    assert capped[capped.index("--max-in-flight") + 1] == "64"
    assert "--max-in-flight" not in _args(OperatorSettings(gateway_max_in_flight=1000))


def test_a_gateway_pod_has_time_to_drain_before_it_is_killed() -> None:
    # The gateway drains for up to 30 s (--drain-timeout's default) after SIGTERM.
    assert _pod(OperatorSettings())["terminationGracePeriodSeconds"] == 35
