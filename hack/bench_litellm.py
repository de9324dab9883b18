"""LiteLLM's proxy for hack/bench_compare.py, bare or in its production shape.

Bare (database=False): a master key and a model list, nothing stored. With database=True, as
LiteLLM is deployed for teams: a throwaway PostgreSQL cluster in the run's folder, LiteLLM's
schema applied, and a virtual key made through /key/generate with a budget and rpm/tpm limits,
so that every request is authenticated against the key (cached from the database), checked
against its budget and limits, and its spend written back (batched, as LiteLLM does).

hack/bench-tools.sh installs what this needs (see the Prisma note there): LiteLLM in its own
virtualenv, PostgreSQL, and a Prisma query engine that works without Prisma's download host.
As Prisma's schema engine is not to be had, LiteLLM's migrations are applied here with psql and
LiteLLM runs with DISABLE_SCHEMA_UPDATE=true, as with a separate migration job.

    .venv/bin/python hack/bench_litellm.py [--workers 2] [--requests 20]

runs a functional check (not a benchmark): a canned upstream, LiteLLM with its database, chat
requests with the virtual key, a wrong key refused, spend recorded, a tiny budget enforced.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("LLMROUTER_CACHE", Path.home() / ".cache" / "llmrouter"))
TOOLS = CACHE / "bench"
LITELLM = TOOLS / "litellm-venv" / "bin" / "litellm"
DB_ENV = TOOLS / "litellm-db.env"
MASTER_KEY = "sk-bench-master-key"
# Priced like a small hosted model, so that spend accrues and the budget check has work to do.
PRICES = {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7}
# The benchmark's key: generous enough never to bind, checked on every request all the same.
KEY_LIMITS: dict[str, Any] = {
    "max_budget": 1_000_000.0,
    "budget_duration": "30d",
    "rpm_limit": 1_000_000_000,
    "tpm_limit": 1_000_000_000_000,
}
# postgres.pid -> its data folder, for stop_litellm
_POSTGRES: dict[int, Path] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(
    method: str, url: str, key: str, body: object = None, timeout: float = 30
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def _db_env() -> dict[str, str]:
    if not DB_ENV.exists():
        sys.exit(f"{DB_ENV} missing: run hack/bench-tools.sh")
    pairs = (line.split("=", 1) for line in DB_ENV.read_text().splitlines() if "=" in line)
    return {name: value for name, value in pairs}


def _as_postgres_user(tmp: Path, folder: Path) -> list[str]:
    """The command prefix that runs initdb and postgres, which refuse to run as root."""
    if os.geteuid() != 0:
        return []
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        user = pwd.getpwnam("nobody")
    os.chown(folder, user.pw_uid, user.pw_gid)
    for parent in (tmp, *tmp.parents):  # let that user through to its folder
        if parent.stat().st_uid == os.geteuid():
            parent.chmod(parent.stat().st_mode | 0o011)
    return [
        "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--clear-groups",
        "--",
    ]


def start_postgres(tmp: Path, max_connections: int) -> tuple[str, subprocess.Popen[bytes]]:
    """A throwaway cluster in tmp/pg with LiteLLM's schema: (database URL, postmaster)."""
    env = _db_env()
    bindir = Path(env["PG_BINDIR"])
    folder = tmp / "pg"
    folder.mkdir()
    prefix = _as_postgres_user(tmp, folder)
    subprocess.run(
        [
            *prefix,
            str(bindir / "initdb"),
            "-D",
            str(folder / "data"),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = (folder / "postgres.log").open("wb")
    # postgres itself, not pg_ctl, so that the Popen is the postmaster (its backends are its
    # children, for whoever counts CPU and memory); stop_litellm shuts it down as pg_ctl would.
    postmaster = subprocess.Popen(
        [
            *prefix,
            str(bindir / "postgres"),
            "-D",
            str(folder / "data"),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={folder}",
            "-c",
            f"max_connections={max_connections}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    _POSTGRES[postmaster.pid] = folder / "data"
    psql = [str(bindir / "psql"), "-X", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    deadline = time.monotonic() + 30
    while subprocess.run([*psql, "-c", "SELECT 1"], capture_output=True).returncode != 0:
        if postmaster.poll() is not None or time.monotonic() > deadline:
            stop_litellm([postmaster])
            raise RuntimeError(f"postgres did not start: {(folder / 'postgres.log').read_text()}")
        time.sleep(0.2)
    subprocess.run([*psql, "-c", "CREATE DATABASE litellm"], check=True, capture_output=True)
    # LiteLLM's migrations, in order, in one session (what `prisma migrate deploy` would apply).
    migrations = sorted(p for p in Path(env["LITELLM_MIGRATIONS"]).iterdir() if p.is_dir())
    script = "\\set ON_ERROR_STOP 1\n" + "".join(
        f"\\i '{m / 'migration.sql'}'\n" for m in migrations if (m / "migration.sql").exists()
    )
    applied = subprocess.run(
        [*psql, "-d", "litellm", "-v", "ON_ERROR_STOP=1"],
        input=script.encode(),
        capture_output=True,
    )
    if applied.returncode != 0:
        stop_litellm([postmaster])
        raise RuntimeError(f"LiteLLM's migrations failed: {applied.stderr.decode()[-2000:]}")
    return f"postgresql://postgres@127.0.0.1:{port}/litellm", postmaster


def _config(json_base: str, sse_base: str) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"openai/{name}",
                    "api_base": base,
                    "api_key": "x",
                    **PRICES,
                },
            }
            for name, base in (("m", json_base), ("s", sse_base))
        ],
        "general_settings": {"master_key": MASTER_KEY},
        "litellm_settings": {"drop_params": True},
    }


def start_litellm(
    tmp: Path, workers: int, json_base: str, sse_base: str, *, database: bool
) -> tuple[str, str, list[subprocess.Popen[bytes]]]:
    """LiteLLM's proxy on a free port: (chat completions URL, bearer key, processes).

    json_base and sse_base are the upstreams' OpenAI bases (http://127.0.0.1:PORT/v1) for
    models m and s. With database, the key is a virtual key (KEY_LIMITS) and the processes
    end with the postmaster. Stop them with stop_litellm. Raises RuntimeError if LiteLLM does
    not come up; its output is in tmp/litellm.log.
    """
    if not LITELLM.exists():
        sys.exit("LiteLLM not installed: run hack/bench-tools.sh")
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    if database:
        db_url, postmaster = start_postgres(tmp, max_connections=max(100, 20 * workers + 20))
        procs.append(postmaster)
        env.update(_db_env())
        env.update(
            DATABASE_URL=db_url, DISABLE_SCHEMA_UPDATE="true", PRISMA_HIDE_UPDATE_MESSAGE="1"
        )
    config = tmp / "litellm.yaml"
    config.write_text(json.dumps(_config(json_base, sse_base)))
    port = free_port()
    log = (tmp / "litellm.log").open("wb")
    # Its workers are spawned with the current directory on sys.path: not the repo, whose
    # operator/ folder would shadow the standard library's.
    proxy = subprocess.Popen(
        [str(LITELLM), "--config", str(config), "--port", str(port), "--num_workers", str(workers)],
        cwd=tmp,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    log.close()
    procs.insert(0, proxy)
    base = f"http://127.0.0.1:{port}"
    try:
        key = _wait_ready(base, proxy, database)
    except BaseException:
        stop_litellm(procs)
        raise
    return f"{base}/chat/completions", key, procs


def _wait_ready(base: str, proxy: subprocess.Popen[bytes], database: bool) -> str:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proxy.poll() is not None:
            raise RuntimeError(f"LiteLLM exited with {proxy.returncode}")
        try:
            if not database:
                if http_json("GET", f"{base}/health/liveliness", MASTER_KEY, timeout=5)[0] == 200:
                    return MASTER_KEY
            else:
                body = {"key_alias": "bench", "models": ["m", "s"], **KEY_LIMITS}
                status, out = http_json("POST", f"{base}/key/generate", MASTER_KEY, body)
                if status == 200:
                    return str(out["key"])
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError("LiteLLM not ready after 300 s")


def stop_litellm(procs: list[subprocess.Popen[bytes]], timeout_s: float = 20) -> None:
    """Stops what start_litellm started: LiteLLM, then anything left in its session (workers,
    query engines), then postgres with a fast shutdown (the signal pg_ctl stop -m fast sends)."""
    for proc in procs:
        if proc.pid in _POSTGRES:
            continue
        proc.terminate()  # LiteLLM stops its workers, which stop their engines
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout_s)
        with contextlib.suppress(ProcessLookupError):  # whatever outlived it
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for proc in procs:
        if _POSTGRES.pop(proc.pid, None) is None or proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


UPSTREAM = """
import sys, time
from aiohttp import web

async def chat(request):
    body = await request.json()
    return web.json_response({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "m"),
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello there."}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
    })

app = web.Application()
app.router.add_post("/v1/chat/completions", chat)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""
CHAT = {"model": "m", "messages": [{"role": "user", "content": "Say hello."}]}


def check(workers: int, requests: int) -> None:
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-I", "-c", UPSTREAM, str(upstream_port)])
    tmp = Path(tempfile.mkdtemp(prefix="bench-litellm-"))
    procs: list[subprocess.Popen[bytes]] = []
    failures: list[str] = []
    try:
        base = f"http://127.0.0.1:{upstream_port}/v1"
        started = time.monotonic()
        url, key, procs = start_litellm(tmp, workers, base, base, database=True)
        print(
            f"ready in {time.monotonic() - started:.1f} s (postgres, migrations, {workers} workers)"
        )
        proxy = url.removesuffix("/chat/completions")

        statuses = [http_json("POST", url, key, CHAT)[0] for _ in range(requests)]
        ok = statuses.count(200)
        print(f"{ok}/{requests} chat completions with the virtual key returned 200")
        if ok != requests:
            failures.append(f"statuses {statuses}")

        status, out = http_json("POST", url, "sk-not-a-key", CHAT)
        print(f"wrong key: {status} {str(out)[:120]}")
        if status not in (400, 401, 403):
            failures.append(f"wrong key answered {status}")

        spend = 0.0
        deadline = time.monotonic() + 90  # spend is written in batches (PROXY_BATCH_WRITE_AT)
        while time.monotonic() < deadline and spend <= 0:
            status, info = http_json("GET", f"{proxy}/key/info?key={key}", MASTER_KEY)
            spend = float(info["info"]["spend"] or 0) if status == 200 else 0.0
            if spend <= 0:
                time.sleep(2)
        print(f"key spend recorded: {spend:.3g} USD (of {KEY_LIMITS['max_budget']:.0f})")
        if spend <= 0:
            failures.append("no spend recorded")

        status, small = http_json(
            "POST", f"{proxy}/key/generate", MASTER_KEY, {"models": ["m"], "max_budget": 1e-6}
        )
        seen = []
        deadline = time.monotonic() + 60
        while status == 200 and time.monotonic() < deadline:
            answer, out = http_json("POST", url, str(small["key"]), CHAT)
            seen.append(answer)
            if answer != 200:
                passed = seen.count(200)
                print(f"tiny budget: {passed} request(s) passed, then {answer} {str(out)[:100]}")
                break
            time.sleep(1)
        else:
            failures.append(f"tiny budget never refused: {seen}")
    finally:
        stop_litellm(procs)
        upstream.terminate()
        upstream.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        sys.exit("FAILED: " + "; ".join(failures))
    print("ok")


def main() -> None:
    parser = argparse.ArgumentParser(description="Functional check of LiteLLM with its database.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    check(args.workers, args.requests)


if __name__ == "__main__":
    main()
