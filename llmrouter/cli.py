"""The `llmrouter` command: the one place that wires control plane and gateway together."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from llmrouter import __version__, audit_cli, slo_cli
from llmrouter.gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from aiohttp import web
from llmrouter.standalone import CONFIG_ERRORS, StandaloneSource

logger = logging.getLogger("llmrouter")


def _endpoint(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected MODEL=URL, e.g. llama-3-8b=http://127.0.0.1:8080/v1"
        )
    return name, url


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return port


def _state_url(text: str) -> str:
    from llmrouter.gateway.state.resp import RedisAddress

    try:
        RedisAddress.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (expected redis://HOST:PORT/DB)") from exc
    return text


def _workers(text: str) -> int:
    if text == "auto":
        return len(os.sched_getaffinity(0))
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a number of processes (1 or more) or auto"
        )
    return count


def _max_in_flight(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of requests (1 or more)")
    return count


def _bytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of bytes (0 or more)")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number greater than zero")
    return value


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        dest="paths",
        type=Path,
        action="append",
        required=True,
        metavar="PATH",
        help="YAML file or directory of resources (repeatable), as for kubectl",
    )
    parser.add_argument(
        "--keys-file",
        type=Path,
        metavar="FILE",
        help="YAML of tenant → key name → API key (or sha256:<hex>)",
    )
    parser.add_argument(
        "--endpoint",
        type=_endpoint,
        action="append",
        default=[],
        metavar="MODEL=URL",
        help="where a llamacpp model's server is, e.g. tiny=http://127.0.0.1:8080/v1"
        " (repeatable; several for one model give replicas)",
    )


def _source(args: argparse.Namespace) -> StandaloneSource:
    endpoints: dict[str, list[str]] = {}
    for name, url in args.endpoint:
        endpoints.setdefault(name, []).append(url)
    return StandaloneSource(paths=args.paths, keys_file=args.keys_file, endpoints=endpoints)


def _gateway_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=8000)
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve Prometheus /metrics on this port of --host (the API port never does; "
        "default: off for serve, 9090 for gateway)",
    )
    parser.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--access-log", action="store_true", help="log one line per request")
    parser.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="send OpenTelemetry traces by OTLP/HTTP to this base URL (default: the "
        "OTEL_EXPORTER_OTLP_ENDPOINT variable; neither: no tracing)",
    )
    parser.add_argument(
        "--trace-sample-ratio",
        type=float,
        metavar="RATIO",
        help="share of traces kept, 0 to 1 (default: OTEL_TRACES_SAMPLER, else all)",
    )
    parser.add_argument(
        "--cache-memory-bytes",
        type=_bytes,
        default=64 * 1024 * 1024,
        metavar="BYTES",
        help="bytes of responses the in-memory response cache keeps (default: 64 MiB; "
        "with --state the cache is in Redis)",
    )
    parser.add_argument(
        "--state",
        type=_state_url,
        default=None,
        metavar="redis://HOST:PORT/DB",
        help="share limits, usage and spend through Redis (default: in memory)",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="worker processes sharing the port, or auto (one per core); more than one "
        "needs --state",
    )
    parser.add_argument(
        "--max-in-flight",
        type=_max_in_flight,
        default=GatewaySettings.max_in_flight,
        metavar="N",
        help="requests each process serves at once; more are refused at once with 503 "
        f"overloaded and Retry-After (default: {GatewaySettings.max_in_flight})",
    )
    parser.add_argument(
        "--drain-timeout",
        type=_positive,
        default=GatewaySettings.drain_timeout_s,
        metavar="SECONDS",
        help="after SIGTERM, how long requests and streams in flight may take to finish "
        f"(default: {GatewaySettings.drain_timeout_s:g})",
    )
    parser.add_argument(
        "--header-timeout",
        type=_positive,
        default=GatewaySettings.header_timeout_s,
        metavar="SECONDS",
        help="close a connection that has not sent a whole request head this long after "
        f"opening or after its previous answer (default: {GatewaySettings.header_timeout_s:g})",
    )
    parser.add_argument(
        "--body-timeout",
        type=_positive,
        default=GatewaySettings.body_timeout_s,
        metavar="SECONDS",
        help="answer 408 when a request body has not arrived this long after the gateway "
        f"asked for it (default: {GatewaySettings.body_timeout_s:g})",
    )
    parser.add_argument(
        "--balancer",
        choices=["least-loaded", "round-robin"],
        default="least-loaded",
        help="how a model's endpoint is chosen (default: least-loaded)",
    )
    parser.add_argument(
        "--redis-failure-policy",
        choices=["fail-open", "fail-closed"],
        default="fail-open",
        help="while Redis is unreachable: admit with a local limiter, or refuse",
    )
    parser.add_argument(
        "--usage-journal",
        metavar="DIR",
        help="with --state: a folder where usage served while Redis is unreachable is kept "
        "(fsynced) until Redis takes it, across crashes and restarts (default: memory only)",
    )
    audit_cli.add_gateway_args(parser)


def _secret_ref(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAMESPACE/NAME")
    return namespace, name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmrouter", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llmrouter {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway configured from YAML files")
    _config_args(serve)
    _gateway_args(serve)
    serve.add_argument(
        "--reload-interval",
        type=_positive,
        default=0.5,
        metavar="SECONDS",
        help="how often to look for changed files",
    )

    gateway = sub.add_parser(
        "gateway", help="run the gateway in a cluster, configured by the operator's Secret"
    )
    _gateway_args(gateway)
    # In a pod the port is private to it: metrics are on by default, for the scraper.
    gateway.set_defaults(metrics_port=9090)
    gateway.add_argument(
        "--config-secret",
        type=_secret_ref,
        default=("llmrouter", "llmrouter-gateway-config"),
        metavar="NAMESPACE/NAME",
        help="the compiled GatewayConfig Secret to watch",
    )
    gateway.add_argument("--kubeconfig", help="default: in-cluster, then ~/.kube/config")

    sub.add_parser("operator", help="run the operator (Kopf) against the current cluster")

    check = sub.add_parser("compile", help="compile YAML files and print the GatewayConfig")
    _config_args(check)

    crds = sub.add_parser("crds", help="write the CustomResourceDefinitions")
    crds.add_argument("--out", type=Path, default=Path("crds"))
    crds.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when the files differ from the models instead of writing",
    )

    sub.add_parser("keygen", help="print a new API key and its sha256 for a keys file")
    slo_cli.add_parser(sub)
    audit_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "serve":
        return _serve(args)
    if args.command == "compile":
        return _compile(args)
    if args.command == "crds":
        return _crds(args)
    if args.command == "gateway":
        return _gateway(args)
    if args.command == "operator":
        return _operator()
    if args.command in ("slo", "dashboards"):
        return slo_cli.run(args)
    if args.command == "audit":
        return audit_cli.run(args)
    return _keygen()


def _serve(args: argparse.Namespace) -> int:

    from llmrouter.gateway.app import create_app
    from llmrouter.gateway.store import ConfigStore
    from llmrouter.standalone import reloader

    if (problem := _gateway_args_problem(args)) is not None:
        print(f"llmrouter: {problem}", file=sys.stderr)
        return 2
    source = _source(args)
    try:
        config = source.load()
    except CONFIG_ERRORS as exc:
        print(f"llmrouter: the configuration does not load:\n{exc}", file=sys.stderr)
        return 1
    settings = _settings(args)

    def make_app() -> web.Application:
        app = create_app(settings, ConfigStore(config))
        app.cleanup_ctx.append(reloader(source, args.reload_interval))
        return app

    logger.info(
        "serving %d models for %d tenants on http://%s:%d",
        len(config.models),
        len(config.tenants),
        settings.host,
        settings.port,
    )
    return _run(make_app, settings, args.workers)


def _gateway_args_problem(args: argparse.Namespace) -> str | None:
    if args.max_body_bytes < 1024:
        return "--max-body-bytes must be at least 1024"
    if args.metrics_port == args.port:
        return "--metrics-port must differ from --port: metrics are not for API clients"
    if args.workers > 1 and not args.state:
        return (
            f"--workers {args.workers} needs --state redis://HOST:PORT/DB: workers are "
            "separate processes, and limits, budgets and usage must be counted in one place"
        )
    if args.usage_journal is not None:
        if not args.state:
            return "--usage-journal needs --state: without Redis, usage is never pending"
        problem = _writable_folder(args.usage_journal)
        if problem:
            return f"--usage-journal {args.usage_journal}: {problem}"
    return audit_cli.gateway_args_problem(args)


def _writable_folder(path: str) -> str | None:
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        return "not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return exc.strerror or str(exc)
    if not os.access(folder, os.W_OK | os.X_OK):
        return "not writable"
    return None


def _settings(args: argparse.Namespace) -> GatewaySettings:
    from llmrouter.gateway.settings import GatewaySettings

    return GatewaySettings(
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        cache_memory_bytes=args.cache_memory_bytes,
        max_body_bytes=args.max_body_bytes,
        access_log=args.access_log,
        otlp_endpoint=args.otlp_endpoint,
        trace_sample_ratio=args.trace_sample_ratio,
        state_url=args.state,
        redis_failure_policy=args.redis_failure_policy,
        usage_journal=args.usage_journal,
        balancer=args.balancer,
        max_in_flight=args.max_in_flight,
        drain_timeout_s=args.drain_timeout,
        **audit_cli.settings_fields(args),
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
    )


def _run(make_app: Callable[[], web.Application], settings: GatewaySettings, workers: int) -> int:
    """Serve until interrupted, in this process or in ``workers`` processes."""
    if workers == 1:
        _serve_app(make_app(), settings)
        return 0
    from llmrouter.workers import PortUnavailable, serve_workers

    try:
        return serve_workers(
            workers,
            lambda listening: _serve_app(make_app(), settings, True, listening),
            settings.host,
            settings.port,
        )
    except PortUnavailable as exc:
        print(f"llmrouter: {exc}", file=sys.stderr)
        return 1


def _serve_app(
    app: web.Application,
    settings: GatewaySettings,
    reuse_port: bool = False,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGTERM, then drain; on uvloop: its event loop is markedly faster than
    asyncio's."""
    import asyncio
    import gc

    import uvloop

    from llmrouter.serving import serve

    # Everything made so far (modules, configuration, the app) lives as long as the process:
    # out of the collector's sight, full collections stop rescanning it. Under overload, with
    # thousands of requests in flight, those rescans had cut throughput to a sixth.
    gc.freeze()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(app, settings, reuse_port=reuse_port, on_listening=on_listening))


def _gateway(args: argparse.Namespace) -> int:

    from llmrouter.gateway.app import create_app
    from llmrouter.gateway.credentials import MappingCredentials
    from llmrouter.gateway.store import ConfigStore
    from llmrouter.incluster import config_watcher, credentials_watcher, load_kube_config

    if (problem := _gateway_args_problem(args)) is not None:
        print(f"llmrouter: {problem}", file=sys.stderr)
        return 2
    load_kube_config(args.kubeconfig)
    settings = _settings(args)

    def make_app() -> web.Application:
        credentials = MappingCredentials()
        app = create_app(settings, ConfigStore(), credentials)
        app.cleanup_ctx.append(config_watcher(*args.config_secret))
        app.cleanup_ctx.append(credentials_watcher(args.config_secret[0], credentials))
        return app

    logger.info(
        "gateway on http://%s:%d, configured by Secret %s/%s",
        settings.host,
        settings.port,
        *args.config_secret,
    )
    return _run(make_app, settings, args.workers)


def _operator() -> int:
    import kopf

    import llmrouter.operator.main  # noqa: F401 - registers the handlers

    kopf.run(clusterwide=True)
    return 0


def _compile(args: argparse.Namespace) -> int:
    try:
        config = _source(args).load()
    except CONFIG_ERRORS as exc:
        print(f"llmrouter: the configuration does not load:\n{exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(
        orjson.dumps(
            config.model_dump(mode="json"), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        )
    )
    sys.stdout.write("\n")
    return 0


def _crds(args: argparse.Namespace) -> int:
    from llmrouter.operator.crdgen import render_all

    stale = []
    for name, text in render_all().items():
        path = args.out / name
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run `llmrouter crds`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


def _keygen() -> int:
    from llmrouter.gateway.config import hash_api_key
    from llmrouter.operator.apikeys import generate_api_key

    key = generate_api_key()
    print(f"key:    {key}\nsha256: sha256:{hash_api_key(key)}")
    return 0
