"""The Helm chart's values, rendered by a real `helm template`."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.e2e.kube_fixtures import helm_template


def operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def test_gateway_workers_reach_the_operator_with_a_state_url() -> None:
    env = operator_env(
        helm_template("gw", "gateway.workers=4", "gateway.stateURL=redis://r:6379/0")
    )
    assert env["LLMROUTER_GATEWAY_WORKERS"] == "4"
    assert env["LLMROUTER_STATE_URL"] == "redis://r:6379/0"
    assert operator_env(helm_template("gw"))["LLMROUTER_GATEWAY_WORKERS"] == "1"


def test_gateway_workers_without_a_state_url_are_refused() -> None:
    with pytest.raises(subprocess.CalledProcessError) as err:
        helm_template("gw", "gateway.workers=2")
    assert "gateway.workers > 1 needs gateway.stateURL" in err.value.stderr


def test_gateway_workers_must_be_a_number_of_processes() -> None:
    with pytest.raises(subprocess.CalledProcessError) as err:
        helm_template("gw", "gateway.workers=many")
    assert "gateway.workers: many is not a number of processes (1 or more)" in err.value.stderr


def test_model_server_network_policies_are_on_unless_turned_off() -> None:
    assert operator_env(helm_template("gw"))["LLMROUTER_MODEL_NETWORK_POLICY"] == "true"
    off = operator_env(helm_template("gw", "modelServers.networkPolicy=false"))
    assert off["LLMROUTER_MODEL_NETWORK_POLICY"] == "false"


def test_gateway_max_in_flight_reaches_the_operator() -> None:
    env = operator_env(helm_template("gw", "gateway.maxInFlight=64"))
    assert env["LLMROUTER_GATEWAY_MAX_IN_FLIGHT"] == "64"
    assert operator_env(helm_template("gw"))["LLMROUTER_GATEWAY_MAX_IN_FLIGHT"] == "1000"


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_gateway_max_in_flight_must_be_a_number_of_requests(value: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as err:
        helm_template("gw", f"gateway.maxInFlight={value}")
    assert f"gateway.maxInFlight: {value} is not a number of requests (1 or more)" in (
        err.value.stderr
    )
