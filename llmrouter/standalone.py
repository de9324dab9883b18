"""Standalone mode: the gateway configured from YAML files instead of a cluster.

It reads the same custom resources a user would `kubectl apply`, compiles them with the
operator's compiler, and recompiles when the files change. A new configuration that does
not load is logged and ignored: the last good one stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from llmrouter.gateway.app import offer_config
from llmrouter.gateway.config import GatewayConfig, hash_api_key
from llmrouter.operator import yamlutil
from llmrouter.operator.compile import CompileError, Resources, compile_config
from llmrouter.operator.manifests import ManifestError, load_manifests, manifest_files

logger = logging.getLogger(__name__)

_HASHED = re.compile(r"^sha256:([0-9a-f]{64})$", re.IGNORECASE)


class KeysFileError(ValueError):
    pass


# What a configuration that cannot be loaded raises; anything else is a bug.
CONFIG_ERRORS = (ManifestError, CompileError, KeysFileError)


def load_keys_file(path: Path) -> dict[tuple[str, str], str]:
    """Read a keys file: ``tenant → key name → key`` (or ``sha256:<hex>`` of the key).

    A tenant is named ``namespace/name``, or just ``name`` for the ``default`` namespace.
    """
    try:
        text = path.read_text()
        doc = yamlutil.load(text)
    except OSError as exc:
        raise KeysFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise KeysFileError(f"{path}: not valid YAML: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise KeysFileError(f"{path}: expected a mapping of tenant → key name → key")
    hashes: dict[tuple[str, str], str] = {}
    for tenant, keys in doc.items():
        if not isinstance(keys, dict):
            raise KeysFileError(f"{path}: {tenant}: expected a mapping of key name → key")
        tenant_id = str(tenant) if "/" in str(tenant) else f"default/{tenant}"
        for name, key in keys.items():
            if not isinstance(key, str) or len(key) < 16:
                raise KeysFileError(
                    f"{path}: {tenant}.{name}: a key must be a string of at least 16 characters"
                )
            digest = _digest(key)
            if digest is None:
                raise KeysFileError(
                    f"{path}:{_line(text, tenant, name)}: {tenant}.{name}: a sha256: entry "
                    "must be the key's sha256 in 64 hex digits, as `llmrouter keygen` prints it"
                )
            hashes[(tenant_id, str(name))] = digest
    return hashes


def _digest(key: str) -> str | None:
    """The sha256 a keys file entry stands for; None for a malformed ``sha256:`` entry.

    The digest is matched whatever its case: taken as a literal key instead, the digest
    string itself would authenticate."""
    if key[:7].lower() != "sha256:":
        return hash_api_key(key)
    match = _HASHED.match(key)
    return match.group(1).lower() if match else None


def _line(text: str, tenant: object, name: object) -> str:
    """The line of ``tenant.name``'s value in the file, or ``?``."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    for step in (tenant, name):
        if not isinstance(node, yaml.MappingNode):
            return "?"
        node = next((v for k, v in node.value if k.value == str(step)), None)
    return str(node.start_mark.line + 1) if node is not None else "?"


@dataclass
class StandaloneSource:
    """Where standalone configuration comes from, and how to tell that it changed."""

    paths: Sequence[Path]
    keys_file: Path | None = None
    endpoints: Mapping[str, list[str]] = field(default_factory=dict)

    def load(self) -> GatewayConfig:
        manifests = load_manifests(self.paths)
        keys = load_keys_file(self.keys_file) if self.keys_file else {}
        config = compile_config(
            Resources(
                tenants=manifests.tenants,
                models=manifests.models,
                experiments=manifests.experiments,
                slapolicies=manifests.slapolicies,
                api_key_hashes=keys,
                endpoints=self.endpoints,
            )
        )
        _warn_unusable_keys(manifests.tenants, keys)
        return config

    def snapshot(self) -> tuple[Any, ...]:
        """Something that changes whenever a file that feeds the configuration changes."""
        files = [*manifest_files(self.paths), *([self.keys_file] if self.keys_file else [])]
        state: list[tuple[str, int | None, int | None]] = []
        for path in files:
            try:
                st = path.stat()
                state.append((str(path), st.st_mtime_ns, st.st_size))
            except OSError:
                state.append((str(path), None, None))
        return tuple(state)


def _warn_unusable_keys(tenants: Sequence[Any], keys: Mapping[tuple[str, str], str]) -> None:
    for tenant in tenants:
        for key in tenant.spec.api_keys:
            if (tenant.tenant_id, key.name) not in keys:
                logger.warning(
                    "%s: API key %r has no value in the keys file; it cannot be used",
                    tenant.ref,
                    key.name,
                )


def reloader(
    source: StandaloneSource, interval_s: float
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    """A cleanup_ctx that polls the files and swaps in each new good configuration."""

    @contextlib.asynccontextmanager
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_watch(app, source, interval_s))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


async def _watch(app: web.Application, source: StandaloneSource, interval_s: float) -> None:
    seen = source.snapshot()
    while True:
        await asyncio.sleep(interval_s)
        now = source.snapshot()
        if now == seen:
            continue
        seen = now
        try:
            config = await asyncio.to_thread(source.load)
        except CONFIG_ERRORS as exc:
            offer_config(app, None, str(exc))
            continue
        offer_config(app, config)
