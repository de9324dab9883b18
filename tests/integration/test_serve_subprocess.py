"""`llmrouter serve` as a user runs it: a subprocess reading YAML files, reloading them."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import REPO
from tests.support.config import DEV_KEY, PROVIDER_TOKEN
from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import wait_until
from tests.support.serve import ServeProcess, llmrouter


@dataclass
class Served:
    url: str
    metrics_url: str
    resources: Path
    keys: Path
    log: Path

    def client(self, key: str = DEV_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)


@pytest.fixture
def served(
    config_files: tuple[Path, Path], upstream: FakeUpstream, tmp_path: Path
) -> Iterator[Served]:
    resources, keys = config_files
    args = [
        "-f",
        str(resources),
        "--keys-file",
        str(keys),
        "--endpoint",
        f"local={upstream.url}",
        "--reload-interval",
        "0.1",
        "--max-body-bytes",
        "65536",
    ]
    env = {"LLMROUTER_SECRET_PROVIDER_TOKEN": PROVIDER_TOKEN}
    with ServeProcess(args, tmp_path / "serve.log", env) as proc:
        yield Served(proc.url, proc.metrics_url, resources, keys, proc.log)


def test_serves_the_openai_api(served: Served) -> None:
    c = served.client()
    assert sorted(m.id for m in c.models.list().data) == ["chat", "local", "provider"]
    answer = c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert answer.usage is not None and answer.usage.total_tokens == 12
    chunks = list(
        c.chat.completions.create(
            model="provider", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == (
        "tok0 tok1 tok2 "
    )
    with pytest.raises(openai.APIStatusError) as err:
        c.embeddings.create(model="local", input="x" * 70_000)
    assert err.value.status_code == 413


def test_metrics_are_served_on_their_own_port_only(served: Served) -> None:
    served.client().models.list()
    # The API port answers /metrics like any unknown path, key or no key.
    for headers in ({}, {"Authorization": f"Bearer {DEV_KEY}"}):
        resp = httpx.get(f"{served.url}/metrics", headers=headers)
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "not_found"
    resp = httpx.get(f"{served.metrics_url}/metrics")
    assert resp.status_code == 200
    assert "llmrouter_config_reloads_total" in resp.text
    assert httpx.get(f"{served.metrics_url}/v1/models").status_code == 404


def test_reloads_changed_files_and_keeps_last_good_config(served: Served) -> None:
    c = served.client()
    tenants = served.resources / "tenants.yaml"
    good = tenants.read_text()

    # An invalid change is refused; the gateway keeps serving the last good config.
    tenants.write_text(good.replace("models: [chat, provider]", "models: [chat, nope]"))
    wait_until(lambda: "keeping the last good one" in served.log.read_text(), 10, "reload error")
    assert "spec.models[1]: unknown model 'nope'" in served.log.read_text()
    assert "provider" in [m.id for m in c.models.list().data]

    # A valid change takes effect without a restart.
    started = time.monotonic()
    tenants.write_text(good.replace("models: [chat, provider]", "models: [chat]"))
    wait_until(lambda: "provider" not in [m.id for m in c.models.list().data], 10, "reload")
    assert time.monotonic() - started < 5
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="provider", messages=[{"role": "user", "content": "x"}])

    # Removing a key from the keys file revokes it.
    served.keys.write_text(served.keys.read_text().replace(f"dev: {DEV_KEY}", ""))
    wait_until(lambda: _is_401(c), 10, "key revocation")


def _is_401(c: openai.OpenAI) -> bool:
    try:
        c.models.list()
    except openai.AuthenticationError:
        return True
    return False


def test_invalid_config_at_startup_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: llmrouter.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: m}\n"
        "spec: {llamacpp: {model: {url: 'https://x/m.gguf'}}, external: {provider: openai,"
        " baseURL: 'https://x', model: m}}\n"
    )
    proc = subprocess.run(
        llmrouter("serve", "-f", str(tmp_path)),
        capture_output=True,
        cwd=REPO,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert (
        "ModelDeployment m: spec: Value error, a ModelDeployment needs exactly one" in proc.stderr
    )
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "-f", "examples", "--port", "99999"], "is not a TCP port"),
        (["serve", "-f", "examples", "--endpoint", "nourl"], "expected MODEL=URL"),
        (["serve", "-f", "examples", "--reload-interval", "-1"], "greater than zero"),
        (["serve", "-f", "examples", "--port", "9100", "--metrics-port", "9100"], "must differ"),
        (["serve", "-f", "examples", "--cache-memory-bytes", "-1"], "a number of bytes"),
        (["serve"], "the following arguments are required: -f/--filename"),
    ],
)
def test_bad_flags_are_refused(args: list[str], message: str) -> None:
    proc = subprocess.run(llmrouter(*args), capture_output=True, text=True, timeout=30, cwd=REPO)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_compile_and_crds_commands(tmp_path: Path) -> None:
    proc = subprocess.run(
        llmrouter("compile", "-f", "examples"), capture_output=True, cwd=REPO, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert '"llama-local"' in proc.stdout
    proc = subprocess.run(
        llmrouter("crds", "--check", "--out", "crds"),
        capture_output=True,
        cwd=REPO,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        llmrouter("crds", "--check", "--out", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert proc.returncode == 1 and "out of date" in proc.stderr
