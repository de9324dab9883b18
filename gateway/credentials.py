"""Provider credentials, looked up by reference at request time and never logged."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Protocol

from llmrouter.gateway.config import CredentialRef


class CredentialSource(Protocol):
    def get(self, ref: CredentialRef) -> str | None: ...


def env_var_name(ref: CredentialRef) -> str:
    """``LLMROUTER_SECRET_<NAME>_<KEY>``, upper-cased, other characters as ``_``."""
    return re.sub(r"[^A-Z0-9]", "_", f"LLMROUTER_SECRET_{ref.secret}_{ref.key}".upper())


class EnvCredentials:
    """Standalone mode: a Secret key ``openai``/``apiKey`` is ``LLMROUTER_SECRET_OPENAI_APIKEY``."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def get(self, ref: CredentialRef) -> str | None:
        return self._environ.get(env_var_name(ref))


class MappingCredentials:
    """Credentials kept in memory by whoever watches where they live (in a cluster: the
    copies of provider Secrets the operator keeps in the gateway's namespace)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str], str] = {}

    def get(self, ref: CredentialRef) -> str | None:
        return self.values.get((ref.namespace, ref.secret, ref.key))
