from __future__ import annotations

from llmrouter.cli import build_parser


def test_metrics_have_their_own_port_by_default_only_in_a_cluster() -> None:
    parser = build_parser()
    assert parser.parse_args(["serve", "-f", "examples"]).metrics_port is None
    assert parser.parse_args(["gateway"]).metrics_port == 9090
    assert parser.parse_args(["gateway", "--metrics-port", "9464"]).metrics_port == 9464
