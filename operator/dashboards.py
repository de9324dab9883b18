"""Grafana dashboards as JSON, generated: the fleet overview and the SLAPolicy view.

Every query reads only what the gateway exports or what the SLO rules record (plus
Prometheus' own ``ALERTS``), and a test parses each of them with promtool. The datasource
is a dashboard variable, so the same JSON works in any Grafana.
"""

from __future__ import annotations

import json
from typing import Any

from llmrouter.operator.slo import PREFIX

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
RATE = "$__rate_interval"


def _datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
    }


def _query_variable(name: str, query: str, multi: bool) -> dict[str, Any]:
    variable: dict[str, Any] = {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,  # on time range change: new tenants and models appear
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "hide": 0,
    }
    if multi:
        variable["allValue"] = ".*"
    return variable


def _panel(
    id_: int,
    title: str,
    targets: list[tuple[str, str]],
    grid: tuple[int, int, int, int],
    unit: str,
    kind: str = "timeseries",
    description: str = "",
) -> dict[str, Any]:
    x, y, w, h = grid
    return {
        "id": id_,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def _dashboard(
    uid: str, title: str, variables: list[dict[str, Any]], panels: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["llmrouter"],
        "timezone": "utc",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "panels": panels,
    }


def overview() -> dict[str, Any]:
    """Requests, errors, latency and TTFT percentiles, tokens and cost, by tenant and model."""
    sel = 'tenant=~"$tenant",model=~"$model"'
    answered = f'{sel},code!~"4.."'

    def quantiles(metric: str) -> list[tuple[str, str]]:
        return [
            (
                f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{sel}}}[{RATE}])))",
                f"p{round(q * 100)}",
            )
            for q in (0.5, 0.95, 0.99)
        ]

    panels = [
        _panel(
            1,
            "Requests by tenant",
            [(f"sum by (tenant) (rate(llmrouter_requests_total{{{sel}}}[{RATE}]))", "{{tenant}}")],
            (0, 0, 12, 8),
            "reqps",
        ),
        _panel(
            2,
            "Requests by model and code",
            [
                (
                    f"sum by (model, code) (rate(llmrouter_requests_total{{{sel}}}[{RATE}]))",
                    "{{model}} {{code}}",
                )
            ],
            (12, 0, 12, 8),
            "reqps",
        ),
        _panel(
            3,
            "Error ratio (5xx) by model",
            [
                (
                    f'sum by (model) (rate(llmrouter_requests_total{{{sel},code=~"5.."}}[{RATE}]))'
                    f" / sum by (model) (rate(llmrouter_requests_total{{{answered}}}[{RATE}]))",
                    "{{model}}",
                )
            ],
            (0, 8, 12, 8),
            "percentunit",
            description="Failures the gateway or a model server caused, among requests that "
            "were not the client's own 4xx.",
        ),
        _panel(
            4,
            "Refused at admission by limit",
            [
                (
                    "sum by (tenant, limit) (rate(llmrouter_admission_refusals_total"
                    f'{{tenant=~"$tenant"}}[{RATE}]))',
                    "{{tenant}} {{limit}}",
                )
            ],
            (12, 8, 12, 8),
            "reqps",
        ),
        _panel(
            5,
            "Request duration",
            quantiles("llmrouter_request_duration_seconds"),
            (0, 16, 12, 8),
            "s",
        ),
        _panel(
            6,
            "Time to first token",
            quantiles("llmrouter_time_to_first_token_seconds"),
            (12, 16, 12, 8),
            "s",
        ),
        _panel(
            7,
            "Tokens by tenant and direction",
            [
                (
                    f"sum by (tenant, direction) (rate(llmrouter_tokens_total{{{sel}}}[{RATE}]))",
                    "{{tenant}} {{direction}}",
                )
            ],
            (0, 24, 12, 8),
            "short",
        ),
        _panel(
            8,
            "Cost per hour by tenant and model",
            [
                (
                    f"sum by (tenant, model) (rate(llmrouter_cost_usd_total{{{sel}}}[{RATE}]))"
                    " * 3600",
                    "{{tenant}} {{model}}",
                )
            ],
            (12, 24, 12, 8),
            "currencyUSD",
        ),
    ]
    variables = [
        _datasource_variable(),
        _query_variable("tenant", "label_values(llmrouter_requests_total, tenant)", True),
        _query_variable(
            "model", 'label_values(llmrouter_requests_total{tenant=~"$tenant"}, model)', True
        ),
    ]
    return _dashboard("llmrouter-overview", "llmrouter: overview", variables, panels)


def slo() -> dict[str, Any]:
    """One SLAPolicy: SLI against objective, budget remaining, burn rates, firing alerts."""
    sel = 'slapolicy="$slapolicy",objective=~"$objective"'
    burn = [
        (
            f"{PREFIX}:error_ratio:rate{w}{{{sel}}}"
            f" / on (slapolicy, objective) (1 - {PREFIX}:objective{{{sel}}})",
            f"{{{{objective}}}} {w}",
        )
        for w in ("5m", "1h", "6h", "1d", "3d")
    ]
    panels = [
        _panel(
            1,
            "SLI over the window against the objective",
            [
                (f"1 - {PREFIX}:error_ratio:period{{{sel}}}", "{{objective}} SLI"),
                (f"{PREFIX}:objective{{{sel}}}", "{{objective}} objective"),
            ],
            (0, 0, 12, 8),
            "percentunit",
        ),
        _panel(
            2,
            "Error budget remaining",
            [(f"{PREFIX}:error_budget_remaining{{{sel}}}", "{{objective}}")],
            (12, 0, 12, 8),
            "percentunit",
            kind="stat",
            description="Share of the window's error budget left; negative once overspent.",
        ),
        _panel(
            3,
            "Burn rates",
            burn,
            (0, 8, 24, 8),
            "short",
            description="Error ratio / allowed ratio: 1 spends the budget exactly over the "
            "window; pages fire above 14.4 (1h and 5m) and 6 (6h and 30m) for 30 days.",
        ),
        _panel(
            4,
            "Firing alerts",
            [
                (
                    'ALERTS{alertname="LLMRouterErrorBudgetBurn",alertstate="firing",'
                    'slapolicy="$slapolicy"}',
                    "{{objective}} {{long_window}}/{{short_window}} {{severity}}",
                )
            ],
            (0, 16, 24, 8),
            "short",
            kind="table",
        ),
    ]
    variables = [
        _datasource_variable(),
        _query_variable("slapolicy", f"label_values({PREFIX}:objective, slapolicy)", False),
        _query_variable(
            "objective",
            f'label_values({PREFIX}:objective{{slapolicy="$slapolicy"}}, objective)',
            True,
        ),
    ]
    return _dashboard("llmrouter-slo", "llmrouter: SLAPolicy", variables, panels)


DASHBOARDS = {"llmrouter-overview.json": overview, "llmrouter-slo.json": slo}


def render_all() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {name: json.dumps(make(), indent=2) + "\n" for name, make in DASHBOARDS.items()}
