"""A real Kubernetes control plane on loopback, from binaries hack/build-kube.sh builds:
etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and kwok faking one node
whose pods become Ready. No container engine is involved."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.processes import stop, tail, wait_until
from tests.support.serve import free_port

REPO = Path(__file__).resolve().parents[2]
FAKE_NODE = "kwok-node-0"


def build() -> Path:
    """The binaries' folder, building them first if they are missing (long, once)."""
    out = subprocess.run(
        [str(REPO / "hack" / "build-kube.sh")], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name,
    signer: rsa.RSAPrivateKey,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


class ControlPlane:
    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="llmrouter-kube-"))
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = self.dir / "kubeconfig"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ready_s = 0.0

    def _pki(self) -> None:
        d = self.dir
        ca_key, sa_key, server_key, admin_key = _key(), _key(), _key(), _key()
        ca = _cert(_name("llmrouter-test-ca"), ca_key, _name("llmrouter-test-ca"), ca_key, ca=True)
        sans: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        ]
        server = _cert(_name("kube-apiserver"), server_key, ca.subject, ca_key, sans=sans)
        admin = _cert(_name("admin", "system:masters"), admin_key, ca.subject, ca_key)
        for name, obj in (("ca.crt", ca), ("server.crt", server), ("admin.crt", admin)):
            (d / name).write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        for name, key in (
            ("ca.key", ca_key),
            ("server.key", server_key),
            ("admin.key", admin_key),
            ("sa.key", sa_key),
        ):
            (d / name).write_bytes(_pem_key(key))
        (d / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self.kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {{server: "{self.server}", certificate-authority: "{d}/ca.crt"}}
users:
- name: admin
  user: {{client-certificate: "{d}/admin.crt", client-key: "{d}/admin.key"}}
contexts:
- name: test
  context: {{cluster: test, user: admin}}
current-context: test
""")

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [str(self.bin / name), *args], stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
        )
        self.procs[name] = proc
        return proc

    def _http(self) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        context.load_cert_chain(str(self.dir / "admin.crt"), str(self.dir / "admin.key"))
        return httpx.Client(base_url=self.server, verify=context, timeout=5)

    def _api_ready(self) -> bool:
        proc = self.procs["kube-apiserver"]
        if proc.poll() is not None:
            raise RuntimeError(f"kube-apiserver exited:\n{tail(self.dir / 'kube-apiserver.log')}")
        try:
            with self._http() as http:
                return http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> ControlPlane:
        started = time.monotonic()
        self._pki()
        d = self.dir
        etcd_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._start(
            "etcd",
            "--data-dir",
            str(d / "etcd"),
            "--name",
            "default",
            "--listen-client-urls",
            etcd_url,
            "--advertise-client-urls",
            etcd_url,
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer_port}",
            "--initial-cluster",
            f"default=http://127.0.0.1:{peer_port}",
            "--log-level",
            "warn",
        )
        self._start(
            "kube-apiserver",
            "--etcd-servers",
            etcd_url,
            "--bind-address",
            "127.0.0.1",
            "--advertise-address",
            "127.0.0.1",
            "--secure-port",
            str(self.port),
            "--tls-cert-file",
            str(d / "server.crt"),
            "--tls-private-key-file",
            str(d / "server.key"),
            "--client-ca-file",
            str(d / "ca.crt"),
            "--service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file",
            str(d / "sa.pub"),
            "--service-account-signing-key-file",
            str(d / "sa.key"),
            "--service-cluster-ip-range",
            "10.0.0.0/24",
            "--authorization-mode",
            "Node,RBAC",
            "--enable-priority-and-fairness=false",
            "--cert-dir",
            str(d / "certs"),
        )
        wait_until(self._api_ready, 90, "kube-apiserver /readyz")
        self._start(
            "kube-controller-manager",
            *self._client_args("kcm"),
            "--service-account-private-key-file",
            str(d / "sa.key"),
            "--root-ca-file",
            str(d / "ca.crt"),
            "--controllers",
            "*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle",
        )
        self._start("kube-scheduler", *self._client_args("scheduler"))
        self._start(
            "kwok",
            "--kubeconfig",
            str(self.kubeconfig),
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=10.0.1.0/24",
            "--node-ip=10.0.1.1",
            "--server-address",
            f"127.0.0.1:{free_port()}",
        )
        self.create_fake_node()
        self.ready_s = time.monotonic() - started
        return self

    def _client_args(self, name: str) -> list[str]:
        """What every component talking to the API server as admin needs."""
        kubeconfig = str(self.kubeconfig)
        return [
            "--kubeconfig",
            kubeconfig,
            "--authentication-kubeconfig",
            kubeconfig,
            "--authorization-kubeconfig",
            kubeconfig,
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            str(free_port()),
            "--leader-elect=false",
            "--cert-dir",
            str(self.dir / f"{name}-certs"),
        ]

    def create_fake_node(self) -> None:
        resources = {"cpu": "64", "memory": "512Gi", "pods": "500", "nvidia.com/gpu": "16"}
        node: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": FAKE_NODE,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": FAKE_NODE, "type": "kwok"},
            },
            "status": {"allocatable": resources, "capacity": resources},
        }
        with self._http() as http:
            resp = http.post("/api/v1/nodes", json=node)
            if resp.status_code not in (201, 409):
                raise RuntimeError(f"cannot create the fake node: {resp.text}")

    def logs(self, name: str) -> str:
        return tail(self.dir / f"{name}.log", 60)

    def stop(self) -> None:
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                stop(proc)
        if not os.environ.get("LLMROUTER_KEEP_KUBE"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
