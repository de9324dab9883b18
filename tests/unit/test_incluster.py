"""The in-cluster gateway's reading of the operator's Secrets, without a cluster."""

from __future__ import annotations

import base64

import pytest
from kubernetes import client
from pydantic import ValidationError

from llmrouter.gateway.config import CredentialRef, GatewayConfig
from llmrouter.gateway.credentials import MappingCredentials
from llmrouter.incluster import _replace_credentials, decode


def secret(data: dict[str, str]) -> client.V1Secret:
    return client.V1Secret(data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()})


def test_decode_reads_the_compiled_config() -> None:
    config = GatewayConfig()
    assert decode(secret({"config.json": config.model_dump_json()})) == config


@pytest.mark.parametrize(
    "data", [{}, {"config.json": "{not json"}, {"config.json": '{"version": 99}'}]
)
def test_decode_refuses_what_is_not_a_config(data: dict[str, str]) -> None:
    with pytest.raises((ValueError, ValidationError)):
        decode(secret(data))


def test_credentials_follow_their_secret() -> None:
    creds = MappingCredentials()
    ref = CredentialRef(secret="openai", key="apiKey", namespace="team")
    _replace_credentials(creds, ("team", "openai"), {"apiKey": "sk-1", "other": "x"})
    assert creds.get(ref) == "sk-1"
    _replace_credentials(creds, ("team", "openai"), {"other": "x"})
    assert creds.get(ref) is None
    assert creds.get(CredentialRef(secret="openai", key="apiKey")) is None  # other namespace


def test_removing_a_copy_under_a_former_name_keeps_the_credential() -> None:
    from llmrouter.incluster import stale_copy
    from llmrouter.operator.names import provider_copy_name

    assert stale_copy("llmrouter-provider-team-openai", ("team", "openai"))
    assert not stale_copy(provider_copy_name("team", "openai"), ("team", "openai"))
