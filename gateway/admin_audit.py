"""GET /admin/audit: the caller's tenant's audit records, filtered and paged.

Read from the audit files on this gateway's disk (every process given the same
``--audit-file`` writes beside it), so with several replicas each answers for its own
records; the files, gathered, are the system of record. Records that name no tenant
(authentication failures) and records of other tenants are never shown.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from llmrouter.gateway.audit.sinks import RotatingFile
from llmrouter.gateway.errors import InvalidRequest, PermissionDenied
from llmrouter.gateway.keys import AUDIT, IDENTITY
from llmrouter.gateway.roles import AUDIT_READ

audit_routes = web.RouteTableDef()

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


def _time(value: str | None, name: str) -> str | None:
    """An ISO 8601 instant as the records write it, so that text order is time order."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"{name!r} must be a time like 2026-11-01T00:00:00Z", param=name
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _cursor(record: dict[str, Any]) -> str:
    key = f"{record['time']}|{record['chain']}|{record['seq']}"
    return base64.urlsafe_b64encode(key.encode()).decode()


def _after(value: str | None) -> tuple[str, str, int] | None:
    if value is None:
        return None
    try:
        time, chain, seq = base64.urlsafe_b64decode(value.encode()).decode().split("|")
        return time, chain, int(seq)
    except ValueError:
        raise InvalidRequest("'after' is not a cursor this API gave", param="after") from None


def _order(record: dict[str, Any]) -> tuple[str, str, int]:
    return str(record["time"]), str(record["chain"]), int(record["seq"])


def _scan(files: list[Path], tenant: str, want: dict[str, Any]) -> list[dict[str, Any]]:
    needle = orjson.dumps(tenant)
    found = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for line in data.split(b"\n"):
            # Cheap test first: most lines of a busy log belong to other tenants.
            if needle not in line:
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a torn last line
            if not isinstance(record, dict) or record.get("tenant") != tenant:
                continue
            if any(record.get(name) != value for name, value in want.items()):
                continue
            found.append(record)
    return found


@audit_routes.get("/admin/audit")
async def audit(request: web.Request) -> web.Response:
    identity = request[IDENTITY]
    identity.require(AUDIT_READ)
    tenant = identity.tenant.id
    query = request.query
    if query.get("tenant", tenant) != tenant:
        raise PermissionDenied("a key may only read its own tenant's audit records")
    writer = request.app.get(AUDIT)
    if writer is None:
        raise InvalidRequest("this gateway keeps no audit log (--audit-file)", code="audit_off")
    try:
        limit = int(query.get("limit", DEFAULT_LIMIT))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"'limit' must be 1 to {MAX_LIMIT}", param="limit")
    want: dict[str, Any] = {}
    for name in ("type", "model", "request_id"):
        if name in query:
            want[name] = query[name]
    if "user" in query:
        # Asked for by name (key:NAME or user:SUBJECT); matched by its HMAC.
        want["user"] = writer.pseudonyms.of(query["user"])
    start, end = _time(query.get("from"), "from"), _time(query.get("to"), "to")
    after = _after(query.get("after"))
    files = writer.file.files() if isinstance(writer.file, RotatingFile) else []
    records = await asyncio.to_thread(_scan, files, tenant, want)
    records = [
        r
        for r in records
        if (start is None or str(r["time"]) >= start)
        and (end is None or str(r["time"]) < end)
        and (after is None or _order(r) > after)
    ]
    records.sort(key=_order)
    page = records[:limit]
    more = len(records) > limit
    return web.json_response(
        {
            "object": "list",
            "tenant": tenant,
            "data": page,
            "next": _cursor(page[-1]) if more else None,
        }
    )
