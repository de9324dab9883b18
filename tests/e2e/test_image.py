"""The OCI image `make image` builds, unpacked by umoci and run from its root file system the
way a pod runs it: as its user, on a read-only root, in its own mount and PID namespaces,
with only /tmp writable."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import http_ok, stop, tail, wait_until
from tests.support.serve import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# Mounts that a container runtime would make, then the image's entrypoint as its user.
RUN = r"""
set -e
r=$1; shift
mount --bind "$r" "$r"
mount -o remount,bind,ro "$r"
mount -t proc proc "$r/proc"
mount -t tmpfs -o size=16m tmpfs "$r/tmp"
mount -t tmpfs -o size=1m,mode=755 tmpfs "$r/dev"
for d in null zero random urandom; do touch "$r/dev/$d"; mount --bind "/dev/$d" "$r/dev/$d"; done
if [ -n "$EXAMPLES" ]; then
  mkdir "$r/tmp/examples"; mount --bind -o ro "$EXAMPLES" "$r/tmp/examples"
fi
exec "$@"
"""


CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


def _tools_missing() -> str | None:
    if os.geteuid() != 0:
        return "building and running the image needs root (mmdebstrap, mount, chroot)"
    for tool in ("mmdebstrap", "umoci", "skopeo", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (hack/system-deps.sh installs it)"
    return None


@pytest.fixture(scope="module")
def image() -> Path:
    missing = _tools_missing()
    if missing:
        pytest.skip(missing)
    if os.environ.get("LLMROUTER_IMAGE"):  # hack/test.sh built it already
        return Path(os.environ["LLMROUTER_IMAGE"])
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
    out = subprocess.run(
        [str(ROOT / "hack/build-image.sh")], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def bundle(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("image") / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{image}/oci:0.1.0", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def _run(bundle: Path, *args: str) -> list[str]:
    """The command that runs ARGS in the image as its runtime configuration says (the host's
    env and chroot set it up: the image has neither)."""
    process = json.loads((bundle / "config.json").read_text())["process"]
    user = f"{process['user']['uid']}:{process['user']['gid']}"
    rootfs = str(bundle / "rootfs")
    return [
        *("unshare", "--mount", "--pid", "--fork", "sh", "-c", RUN, "run"),
        *(rootfs, "env", "-i", *process["env"], CHROOT, f"--userspec={user}", rootfs, *args),
    ]


def test_runtime_config_is_a_non_root_user_and_the_entrypoint(bundle: Path) -> None:
    process = json.loads((bundle / "config.json").read_text())["process"]
    assert process["user"]["uid"] == 65532 and process["user"]["gid"] == 65532
    assert process["args"][0] == "/usr/local/bin/llmrouter"
    assert process["cwd"] == "/home/llmrouter"
    rootfs = bundle / "rootfs"
    # Nothing at run time needs a shell, and the image has none.
    for shell in ("bin/sh", "bin/bash", "bin/dash", "usr/bin/sh", "usr/bin/bash", "usr/bin/dash"):
        assert not (rootfs / shell).exists(), shell
    assert (rootfs / "etc/ssl/certs/ca-certificates.crt").stat().st_size > 100_000


def test_sbom_lists_debian_and_python_packages(image: Path, bundle: Path) -> None:
    sbom = json.loads((image / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    purls = {c["purl"].split("@")[0] for c in sbom["components"]}
    for name in ("pkg:deb/debian/python3.11", "pkg:deb/debian/libc6", "pkg:pypi/llmrouter"):
        assert name in purls
    for name in ("aiohttp", "kopf", "pydantic", "numpy"):
        assert f"pkg:pypi/{name}" in purls
    inside = bundle / "rootfs/usr/share/doc/llmrouter/sbom.cdx.json"
    assert json.loads(inside.read_text()) == sbom
    # Every Python distribution in the image is in the SBOM.
    site = bundle / "rootfs/usr/lib/python3/dist-packages"
    assert len(list(site.glob("*.dist-info"))) == sum(
        c["purl"].startswith("pkg:pypi/") for c in sbom["components"]
    )


def test_version_from_a_read_only_root(bundle: Path) -> None:
    out = subprocess.run(
        _run(bundle, "/usr/local/bin/llmrouter", "--version"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": os.environ["PATH"], "EXAMPLES": ""},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "llmrouter 0.1.0"


def _terminate(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM to the image's process, PID 1 of its namespace, as a kubelet sends it: unshare
    hands on no signal, and the process left it no parent-death signal when it changed user."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    for pid in children:
        os.kill(int(pid), signal.SIGTERM)
    try:
        return proc.wait(30)
    finally:
        stop(proc)


@pytest.fixture
def served(bundle: Path, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    port, metrics = free_port(), free_port()
    while metrics == port:
        metrics = free_port()
    log = tmp_path / "serve.log"
    cmd = _run(
        bundle,
        "/usr/local/bin/llmrouter",
        "serve",
        "-f",
        "/tmp/examples",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics),
    )
    env = {"PATH": os.environ["PATH"], "EXAMPLES": str(ROOT / "examples")}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: http_ok(f"{url}/healthz") or proc.poll() is not None,
            90,
            "the image's llmrouter serve",
        )
        assert proc.poll() is None, tail(log)
        yield url, proc, log
    finally:
        if proc.poll() is None:
            _terminate(proc)


def test_image_serves_healthz_from_a_read_only_root(
    served: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    import httpx

    url, proc, log = served
    health = httpx.get(f"{url}/healthz", timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    models = httpx.get(f"{url}/v1/models", timeout=5)
    assert models.status_code == 401  # the examples' tenant wants a key
    assert _terminate(proc) == 0, tail(log)
    text = log.read_text()
    assert "Read-only file system" not in text and "Traceback" not in text, text


def test_skopeo_reads_the_layout_as_pushed(image: Path) -> None:
    out = subprocess.run(
        ["skopeo", "inspect", f"oci:{image}/oci:0.1.0"], capture_output=True, text=True, check=True
    )
    info = json.loads(out.stdout)
    index = json.loads((image / "oci/index.json").read_text())
    assert info["Digest"] == index["manifests"][0]["digest"]
    assert info["Labels"]["org.opencontainers.image.version"] == "0.1.0"
    assert info["Labels"]["org.opencontainers.image.created"] == info["Created"]
