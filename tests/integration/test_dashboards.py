"""The generated Grafana dashboards: every query parses (promtool), reads only what the
gateway exports or the SLO rules record, the chart's copies are current, and the chart
turns them into sidecar ConfigMaps."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from llmrouter.cli import main
from llmrouter.gateway.metrics import GatewayMetrics
from llmrouter.operator.api.slapolicy import SLAPolicy
from llmrouter.operator.dashboards import DASHBOARDS, render_all
from llmrouter.operator.slo import dump, rule_file
from tests.e2e.kube_fixtures import helm_template

REPO = Path(__file__).resolve().parents[2]
VARIABLES = {"$__rate_interval": "5m", "$tenant": "t", "$model": "m"}
VARIABLES |= {"$slapolicy": "ns/p", "$objective": "o"}


def expressions() -> list[str]:
    return [
        t["expr"] for make in DASHBOARDS.values() for p in make()["panels"] for t in p["targets"]
    ]


def variable_queries() -> list[str]:
    return [
        v["query"]["query"]
        for make in DASHBOARDS.values()
        for v in make()["templating"]["list"]
        if v["type"] == "query"
    ]


def substituted(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run hack/system-deps.sh"
    # promtool parses rule expressions: each query becomes one, variables filled in.
    queries = [substituted(e) for e in expressions()]
    queries += [
        substituted(re.fullmatch(r"label_values\((.*), \w+\)", q).group(1))  # type: ignore[union-attr]
        for q in variable_queries()
    ]
    rules = [{"record": f"dashboard:query{i}", "expr": q} for i, q in enumerate(queries)]
    path = tmp_path / "queries.yaml"
    path.write_text(dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules)} rules found" in check.stdout


def exported_names() -> set[str]:
    """What the gateway's /metrics can show, and what the SLO rules record."""
    names = {"ALERTS"}
    for family in GatewayMetrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "count", "sum")}
        else:
            names.add(family.name)
    policy = SLAPolicy.model_validate(
        {
            "apiVersion": "llmrouter.io/v1alpha1",
            "kind": "SLAPolicy",
            "metadata": {"name": "p"},
            "spec": {
                "tenant": "t",
                "objectives": [{"name": "a", "type": "availability", "target": "99"}],
            },
        }
    )
    names |= {
        r["record"] for g in rule_file([policy])["groups"] for r in g["rules"] if "record" in r
    }
    return names


def test_dashboards_read_only_what_the_gateway_exports_or_the_rules_record() -> None:
    exported = exported_names()
    assert "llmrouter_request_duration_seconds_bucket" in exported
    used = {
        name
        for q in expressions() + variable_queries()
        for name in re.findall(r"\b(llmrouter_[a-z0-9_:]+|ALERTS)\b", q)
    }
    assert used - exported == set()
    assert len(used) >= 10


def test_the_datasource_is_a_variable_and_panel_ids_are_unique() -> None:
    for make in DASHBOARDS.values():
        dashboard: dict[str, Any] = make()
        assert dashboard["templating"]["list"][0]["type"] == "datasource"
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])


def test_dashboards_command_writes_them_and_the_chart_copy_is_current(tmp_path: Path) -> None:
    assert main(["dashboards", "--out", str(tmp_path)]) == 0
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == render_all()
    assert json.loads((tmp_path / "llmrouter-slo.json").read_text())["uid"] == "llmrouter-slo"
    # The chart ships the same files: regenerate with
    # `llmrouter dashboards --out charts/llmrouter/dashboards`.
    assert main(["dashboards", "--out", str(REPO / "charts/llmrouter/dashboards"), "--check"]) == 0
    (tmp_path / "llmrouter-slo.json").write_text("{}")
    assert main(["dashboards", "--out", str(tmp_path), "--check"]) == 1


def test_the_chart_provisions_them_for_the_grafana_sidecar() -> None:
    assert not [d for d in helm_template("mon") if d["kind"] == "ConfigMap"]
    docs = helm_template("mon", "dashboards.enabled=true", "dashboards.namespace=grafana")
    maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    assert sorted(maps) == ["llmrouter-overview-dashboard", "llmrouter-slo-dashboard"]
    overview = maps["llmrouter-overview-dashboard"]
    assert overview["metadata"]["namespace"] == "grafana"
    assert overview["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(overview["data"]["llmrouter-overview.json"]) == json.loads(
        render_all()["llmrouter-overview.json"]
    )
