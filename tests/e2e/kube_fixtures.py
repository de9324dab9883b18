"""Session fixtures for tests against the real control plane."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from tests.support.kube import ControlPlane, build

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane(build()) as cp:
        config.load_kube_config(str(cp.kubeconfig))
        install_crds()
        yield cp


def install_crds() -> None:
    api = client.ApiextensionsV1Api()
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        api.create_custom_resource_definition(crd)
        name = crd["metadata"]["name"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = api.read_custom_resource_definition(name).status
            conditions = (status.conditions if status else None) or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            time.sleep(0.1)
        else:
            raise TimeoutError(f"CRD {name} not established")


def eventually(check: Any, timeout_s: float = 30, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:
            last = exc
        time.sleep(interval_s)
    raise AssertionError(f"not true after {timeout_s}s: {last!r}")
