"""A real Kubernetes control plane on loopback, from the binaries hack/build-kube.sh builds:
etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and kwok faking one node
whose pods become Ready. No container engine, no kubelet, no traffic to pod or Service IPs.

    with ControlPlane(build()) as cp:
        config.load_kube_config(str(cp.kubeconfig))   # admin (system:masters)

Set LLMROUTER_KEEP_KUBE=1 to keep the folder (certificates, kubeconfig, one log per
process) after stop()."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
FAKE_NODE = "kwok-node-0"
# Clients of the API server first, the API server, then etcd.
STOP_ORDER = ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


def build() -> Path:
    """The binaries' folder, building them first if they are missing (long, once)."""
    out = subprocess.run(
        [str(REPO / "hack" / "build-kube.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _cert(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    signer: rsa.RSAPrivateKey,
    issuer: x509.Name | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    """Signed by `signer`; a self-signed CA when there is no `issuer`."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signer, hashes.SHA256())


class ControlPlane:
    def __init__(self, bin_dir: Path) -> None:
        self.bin = Path(bin_dir)
        self.dir = Path(tempfile.mkdtemp(prefix="llmrouter-kube-"))
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = self.dir / "kubeconfig"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.timings: dict[str, float] = {}  # seconds from start(): "apiserver", "ready"
        self.ready_s = 0.0

    # -- certificates and kubeconfig ---------------------------------------------------

    def _pki(self) -> None:
        d = self.dir
        ca_key, server_key, admin_key, sa_key = _key(), _key(), _key(), _key()
        ca = _cert(_name("llmrouter-test-ca"), ca_key, ca_key)
        sans: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),  # the `kubernetes` Service
        ]
        server = _cert(_name("kube-apiserver"), server_key, ca_key, ca.subject, sans)
        admin = _cert(_name("admin", "system:masters"), admin_key, ca_key, ca.subject)
        for file, cert in (("ca.crt", ca), ("server.crt", server), ("admin.crt", admin)):
            (d / file).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        for file, key in (
            ("ca.key", ca_key),
            ("server.key", server_key),
            ("admin.key", admin_key),
            ("sa.key", sa_key),
        ):
            (d / file).write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
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

    def http(self) -> httpx.Client:
        """An admin HTTP client of the API server."""
        context = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        context.load_cert_chain(str(self.dir / "admin.crt"), str(self.dir / "admin.key"))
        return httpx.Client(base_url=self.server, verify=context, timeout=5)

    # -- processes ---------------------------------------------------------------------

    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        with (self.dir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [str(self.bin / name), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
                env={**os.environ, **(env or {})},
            )

    def logs(self, name: str, lines: int = 40) -> str:
        try:
            text = (self.dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _failure(self, what: str, names: tuple[str, ...]) -> RuntimeError:
        tails = "".join(f"\n--- {n}.log (last lines)\n{self.logs(n)}" for n in names)
        return RuntimeError(f"Kubernetes control plane: {what}{tails}")

    def _wait(self, check: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise self._failure(f"{name} exited with {proc.returncode}", (name,))
            try:
                if check():
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise self._failure(f"timed out after {timeout_s}s: {what}", tuple(self.procs))
            time.sleep(0.1)

    def start(self) -> ControlPlane:
        """Starts everything and returns once a pod could be scheduled and become Ready:
        /readyz answers ok, the fake node is Ready, `default/default` ServiceAccount exists."""
        started = time.monotonic()
        try:
            self._start()
            self.ready_s = self.timings["ready"] = time.monotonic() - started
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        started = time.monotonic()
        d = self.dir
        self._pki()
        etcd = f"http://127.0.0.1:{free_port()}"
        peer = f"http://127.0.0.1:{free_port()}"
        # etcd and the API server start together: the API server waits for etcd.
        self._spawn(
            "etcd",
            f"--data-dir={d / 'etcd'}",
            "--name=default",
            f"--listen-client-urls={etcd}",
            f"--advertise-client-urls={etcd}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync=true",  # throwaway data: no disk flush per write
            "--log-level=warn",
        )
        self._spawn(
            "kube-apiserver",
            f"--etcd-servers={etcd}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--tls-cert-file={d / 'server.crt'}",
            f"--tls-private-key-file={d / 'server.key'}",
            f"--client-ca-file={d / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",  # addresses in the API only
            "--allow-privileged=true",
            # The `kubernetes` Service cannot point at a loopback address: no Endpoints.
            "--endpoint-reconciler-type=none",
        )
        self._wait(self._readyz, 90, "kube-apiserver /readyz")
        self.timings["apiserver"] = time.monotonic() - started

        kubeconfig = f"--kubeconfig={self.kubeconfig}"
        # --secure-port=0: no health endpoint to serve, so no port and no delegated auth.
        self._spawn(
            "kube-controller-manager",
            kubeconfig,
            "--secure-port=0",
            "--leader-elect=false",
            "--controllers=*",  # the cloud ones skip themselves; node-ipam is off by default
            # All controllers share the admin credentials: --use-service-account-credentials
            # (one ServiceAccount and token per controller) would add ~5 s to every start.
            f"--service-account-private-key-file={d / 'sa.key'}",
            f"--root-ca-file={d / 'ca.crt'}",
        )
        self._spawn("kube-scheduler", kubeconfig, "--secure-port=0", "--leader-elect=false")
        # kwok's default node and pod stages make its nodes and their pods Ready; its own
        # folder keeps a ~/.kwok/kwok.yaml of the user's out. Pod IPs (kwok's default,
        # 10.0.0.1/24, would overlap the Service range) start at --cidr's address.
        self._spawn(
            "kwok",
            kubeconfig,
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=10.244.0.1/16",
            "--node-ip=10.0.1.1",
            env={"KWOK_WORKDIR": str(d / "kwok")},
        )
        self.create_fake_node()
        self._wait(self._node_ready, 60, f"node {FAKE_NODE} Ready (kwok)")
        self._wait(
            self._exists("/api/v1/namespaces/default/serviceaccounts/default"),
            60,
            "ServiceAccount default/default (kube-controller-manager)",
        )

    def _readyz(self) -> bool:
        with self.http() as http:
            return http.get("/readyz").status_code == 200

    def _exists(self, path: str) -> Callable[[], bool]:
        def check() -> bool:
            with self.http() as http:
                return http.get(path).status_code == 200

        return check

    def _node_ready(self) -> bool:
        with self.http() as http:
            resp = http.get(f"/api/v1/nodes/{FAKE_NODE}")
        if resp.status_code != 200:
            return False
        conditions = resp.json().get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

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
        with self.http() as http:
            resp = http.post("/api/v1/nodes", json=node)
        if resp.status_code not in (201, 409):
            raise self._failure(f"cannot create node {FAKE_NODE}: {resp.text}", ())

    def stop(self) -> None:
        """Stops every process (clients of the API server first) and removes the folder."""
        for group in (STOP_ORDER[:3], STOP_ORDER[3:4], STOP_ORDER[4:]):
            procs = [p for name in group if (p := self.procs.pop(name, None)) is not None]
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if not os.environ.get("LLMROUTER_KEEP_KUBE"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
