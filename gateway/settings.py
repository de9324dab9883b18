"""Settings of one gateway process."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    """Address to listen on; 0.0.0.0 in a container."""

    port: int = 8000
    """TCP port to listen on."""

    max_body_bytes: int = 4 * 1024 * 1024
    """Largest request body accepted; a larger one gets 413 before it is read whole."""

    access_log: bool = False
    """Log one line per request (off by default: it costs time on every request)."""
