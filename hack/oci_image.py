"""Packs a root file system into an OCI image layout, byte for byte the same for the same
input, and writes its CycloneDX SBOM. Used by hack/build-image.sh; the image facts (user,
entrypoint, environment, labels) live here, and tests/e2e/test_image.py checks that the
Dockerfile states the same ones.

    python hack/oci_image.py facts                      # the facts as JSON
    python hack/oci_image.py dpkg-status CONTROL ROOTFS  # /var/lib/dpkg/status from .deb control
    python hack/oci_image.py sbom ROOTFS OUT.json
    python hack/oci_image.py pack ROOTFS LAYOUT_DIR

SOURCE_DATE_EPOCH (required by pack and sbom) is every file's mtime and the image's
creation time.
"""

from __future__ import annotations

import datetime
import email.parser
import gzip
import hashlib
import json
import os
import sys
import tarfile
import uuid
from pathlib import Path
from typing import IO, Any

BASE = "debian:bookworm"
UID = 65532
USER = f"{UID}:{UID}"
ENTRYPOINT = ["/usr/local/bin/llmrouter"]
ENV = [
    "PATH=/usr/local/bin:/usr/bin:/bin",
    "LANG=C.UTF-8",
    # The root file system may be read-only: never try to write bytecode next to the sources
    # (it is compiled at build time).
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
]
WORKDIR = "/home/llmrouter"
# Kept in step with pyproject.toml by tests/e2e/test_image.py.
VERSION = "0.1.0"
LICENSE = "Apache-2.0"


def labels(created: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": "llmrouter",
        "org.opencontainers.image.description": (
            "Kubernetes-native, multi-tenant LLM gateway: `llmrouter operator` and "
            "`llmrouter gateway`"
        ),
        "org.opencontainers.image.version": VERSION,
        "org.opencontainers.image.licenses": LICENSE,
        "org.opencontainers.image.base.name": BASE,
        "org.opencontainers.image.created": created,
    }


def facts() -> dict[str, Any]:
    """What the Dockerfile must say too (created aside, which only the build knows)."""
    return {
        "base": BASE,
        "user": USER,
        "entrypoint": ENTRYPOINT,
        "env": ENV,
        "workdir": WORKDIR,
        "labels": {k: v for k, v in labels("").items() if k != "org.opencontainers.image.created"},
    }


def _epoch() -> int:
    try:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    except (KeyError, ValueError):
        sys.exit("SOURCE_DATE_EPOCH must be set to a number of seconds")


def _rfc3339(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# --- dpkg status ----------------------------------------------------------------------------


def _paragraphs(text: str) -> list[list[str]]:
    out: list[list[str]] = []
    cur: list[str] = []
    for line in text.splitlines():
        if line.strip():
            cur.append(line)
        elif cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def dpkg_status(control: Path, rootfs: Path) -> None:
    """mmdebstrap's extract variant unpacks packages without recording them: write the
    status database from their control files, so that scanners (and the SBOM) see them."""
    entries = []
    for para in _paragraphs(control.read_text()):
        name = para[0].split(":", 1)[1].strip()
        entries.append((name, "\n".join([para[0], "Status: install ok installed", *para[1:]])))
    entries.sort()
    path = rootfs / "var/lib/dpkg/status"
    path.write_text("".join(body + "\n\n" for _, body in entries))


# --- SBOM -----------------------------------------------------------------------------------


def _debian_components(rootfs: Path) -> list[dict[str, Any]]:
    comps = []
    for para in _paragraphs((rootfs / "var/lib/dpkg/status").read_text()):
        fields = {}
        for line in para:
            if not line.startswith((" ", "\t")) and ":" in line:
                k, v = line.split(":", 1)
                fields[k] = v.strip()
        name, version, arch = fields["Package"], fields["Version"], fields["Architecture"]
        comps.append(
            {
                "type": "library",
                "bom-ref": f"deb:{name}",
                "name": name,
                "version": version,
                "purl": f"pkg:deb/debian/{name}@{version}?arch={arch}&distro=debian-12",
                "supplier": {"name": fields.get("Maintainer", "Debian")},
            }
        )
    return comps


def _python_components(rootfs: Path) -> list[dict[str, Any]]:
    comps = []
    site = rootfs / "usr/lib/python3/dist-packages"
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        msg = email.parser.HeaderParser().parsestr(meta.read_text(errors="replace"))
        name, version = msg["Name"], msg["Version"]
        norm = name.lower().replace("_", "-").replace(".", "-")
        comp: dict[str, Any] = {
            "type": "application" if norm == "llmrouter" else "library",
            "bom-ref": f"pypi:{norm}",
            "name": name,
            "version": version,
            "purl": f"pkg:pypi/{norm}@{version}",
        }
        lic = msg.get("License-Expression") or (msg.get("License") or "").strip()
        if lic and "\n" not in lic and len(lic) < 100:
            comp["licenses"] = [{"expression": lic}]
        comps.append(comp)
    return comps


def sbom(rootfs: Path, out: Path) -> None:
    epoch = _epoch()
    components = _debian_components(rootfs) + _python_components(rootfs)
    doc = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        # Derived from the content, so that the same image has the same SBOM.
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(components))}",
        "version": 1,
        "metadata": {
            "timestamp": _rfc3339(epoch),
            "tools": {"components": [{"type": "application", "name": "hack/oci_image.py"}]},
            "component": {
                "type": "container",
                "bom-ref": "image",
                "name": "llmrouter",
                "version": VERSION,
            },
        },
        "components": components,
    }
    out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


# --- OCI layout -----------------------------------------------------------------------------

# Not part of an image: the runtime mounts or creates these.
_SKIP_CONTENT = {"dev", "proc", "sys", "run", "tmp"}


class _Hashing:
    """A write-only file that hashes what passes through it, then hands it on."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _entries(rootfs: Path) -> list[tuple[Path, str]]:
    """(path, name in the layer) of every entry, parents first, in a fixed order."""
    out: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(rootfs):
        here = Path(dirpath)
        rel = here.relative_to(rootfs)
        if rel != Path("."):
            out.append((here, str(rel)))
        if str(rel) in _SKIP_CONTENT:
            dirnames.clear()
            continue
        # Links to folders are entries of their own, not walked into.
        links = [d for d in dirnames if (here / d).is_symlink()]
        dirnames[:] = sorted(d for d in dirnames if d not in links)
        out.extend((here / n, str(rel / n)) for n in sorted(filenames + links))
    return out


def _layer(rootfs: Path, blobs: Path, epoch: int) -> tuple[str, str, int]:
    """Writes the gzipped layer; returns (diff_id, digest, size)."""
    tmp = blobs / "layer.tmp"

    def norm(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = epoch
        info.uname = info.gname = ""
        return info

    with tmp.open("wb") as raw:
        compressed = _Hashing(raw)
        gz = gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, filename="", compresslevel=6)  # type: ignore[arg-type]
        with gz:
            plain = _Hashing(gz)  # type: ignore[arg-type]
            pax = tarfile.PAX_FORMAT
            with tarfile.open(fileobj=plain, mode="w|", format=pax) as tar:  # type: ignore[call-overload]
                for path, name in _entries(rootfs):
                    tar.add(path, arcname=name, recursive=False, filter=norm)
    digest = compressed.sha.hexdigest()
    tmp.rename(blobs / digest)
    return f"sha256:{plain.sha.hexdigest()}", f"sha256:{digest}", compressed.size


def _blob(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def pack(rootfs: Path, layout: Path) -> None:
    epoch = _epoch()
    created = _rfc3339(epoch)
    blobs = layout / "blobs/sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    diff_id, layer_digest, layer_size = _layer(rootfs, blobs, epoch)
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": USER,
            "Entrypoint": ENTRYPOINT,
            "Cmd": ["--help"],
            "Env": ENV,
            "WorkingDir": WORKDIR,
            "Labels": labels(created),
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {
                "created": created,
                "created_by": "hack/build-image.sh: mmdebstrap bookworm python3, llmrouter wheel",
            }
        ],
    }
    config_digest, config_size = _blob(blobs, _dumps(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
        "annotations": labels(created),
    }
    manifest_digest, manifest_size = _blob(blobs, _dumps(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": VERSION},
            }
        ],
    }
    (layout / "index.json").write_bytes(_dumps(index))
    (layout / "oci-layout").write_bytes(_dumps({"imageLayoutVersion": "1.0.0"}))
    print(manifest_digest)


def main(argv: list[str]) -> None:
    match argv:
        case ["facts"]:
            print(json.dumps(facts(), indent=1))
        case ["dpkg-status", control, rootfs]:
            dpkg_status(Path(control), Path(rootfs))
        case ["sbom", rootfs, out]:
            sbom(Path(rootfs), Path(out))
        case ["pack", rootfs, layout]:
            pack(Path(rootfs), Path(layout))
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
