"""The image's recipe without building it: the Dockerfile states the facts hack/oci_image.py
packs into the image, and packing is byte-for-byte reproducible."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import shlex
import tarfile
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _oci_image() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oci_image", ROOT / "hack/oci_image.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


oci_image = _oci_image()


def _final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile's last stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stage: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stage = []
        stage.append((word.upper(), rest.strip()))
    return stage


def _pairs(args: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(args))


def test_dockerfile_describes_the_same_image() -> None:
    facts = oci_image.facts()
    stage = _final_stage()
    found = {word: rest for word, rest in stage if word in {"FROM", "USER", "WORKDIR"}}
    assert found["FROM"].split()[0] == facts["base"]
    assert found["USER"] == facts["user"]
    assert found["WORKDIR"] == facts["workdir"]
    entrypoints = [json.loads(rest) for word, rest in stage if word == "ENTRYPOINT"]
    assert entrypoints == [facts["entrypoint"]]
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    for word, rest in stage:
        if word == "ENV":
            env.update(_pairs(rest))
        elif word == "LABEL":
            labels.update(_pairs(rest))
    assert env == dict(item.split("=", 1) for item in facts["env"])
    assert labels == facts["labels"]


def test_image_version_is_the_package_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == oci_image.VERSION


def _tree(root: Path, mtime: int) -> None:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("#!/usr/bin/python3\n")
    (root / "usr/bin/tool").chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("llmrouter:x:65532:65532::/:/usr/sbin/nologin\n")
    os.link(root / "usr/bin/tool", root / "usr/bin/tool2")
    (root / "bin").symlink_to("usr/bin")
    (root / "dev").mkdir()
    (root / "dev/leftover").write_text("not part of an image")
    for path in [*root.rglob("*"), root]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def test_packing_is_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    digests = []
    for n, mtime in enumerate([1_000_000_000, 1_800_000_000]):
        rootfs, layout = tmp_path / f"rootfs{n}", tmp_path / f"oci{n}"
        rootfs.mkdir()
        _tree(rootfs, mtime)
        oci_image.pack(rootfs, layout)
        index = json.loads((layout / "index.json").read_text())
        digests.append(index["manifests"][0]["digest"])
    assert digests[0] == digests[1]

    layout = tmp_path / "oci0"
    blobs = layout / "blobs/sha256"
    manifest = json.loads((blobs / digests[0].split(":")[1]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_bytes())
    assert config["config"]["User"] == "65532:65532"
    assert config["created"] == "2023-11-14T22:13:20Z"
    layer = blobs / manifest["layers"][0]["digest"].split(":")[1]
    assert hashlib.sha256(layer.read_bytes()).hexdigest() == layer.name
    with tarfile.open(layer) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert {m.mtime for m in members.values()} == {1700000000}
    assert members["bin"].issym() and members["bin"].linkname == "usr/bin"
    assert members["usr/bin/tool2"].islnk()
    assert "dev" in members and "dev/leftover" not in members
    plain = hashlib.sha256(gzip.decompress(layer.read_bytes())).hexdigest()
    assert config["rootfs"]["diff_ids"] == [f"sha256:{plain}"]
