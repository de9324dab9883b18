"""Experiment status: the live figures and verdict, and the policy that acts on it.

Every spec.analysis.interval the statistics the gateways keep in the shared state (Redis)
are analysed (llmrouter.gateway.experiments) and written into status. A verdict is kept
once reached, until the split changes (a new epoch). The policy acts through
``status.routedTo`` (Promote: the winner, Rollback: control), which the compiler puts into
the gateway configuration: the spec is never written, so GitOps sees no drift.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

import kopf

from llmrouter.gateway.config import ExperimentPolicy, GatewayConfig
from llmrouter.gateway.experiments.report import Report, report
from llmrouter.gateway.state.redis import RedisStore
from llmrouter.operator import audit, kube, settings
from llmrouter.operator.api.common import GROUP, VERSION
from llmrouter.operator.controllers.compiler import request_compile
from llmrouter.operator.controllers.conditions import condition, merged
from llmrouter.operator.render import GATEWAY_CONFIG_KEY


@kopf.on.create(GROUP, VERSION, "experiments")
@kopf.on.resume(GROUP, VERSION, "experiments")
@kopf.on.update(GROUP, VERSION, "experiments", field="spec")
@kopf.on.delete(GROUP, VERSION, "experiments", optional=True)
def experiment_changed(**_: Any) -> None:
    request_compile()


@kopf.timer(
    GROUP,
    VERSION,
    "experiments",
    interval=settings.current().experiment_interval_s,
    initial_delay=2,
)
async def analyse(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    meta = body["metadata"]
    policy = published_policy(f"{meta['namespace']}/{meta['name']}")
    if policy is None:
        return  # not compiled: its Compiled condition says why
    state: RedisStore | None = memo.get("usage_state")
    now = datetime.datetime.now(datetime.UTC)
    previous = dict(status)
    if state is None:
        patch.status.update(no_state_status(previous, body, now))
        return
    if not due(previous, policy, now):
        return
    created = datetime.datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
    found = await report(state, policy, (now - created).total_seconds())
    new = experiment_status(previous, found, body["spec"].get("policy") or {}, now)
    await audit.experiment_decision(f"{meta['namespace']}/{meta['name']}", previous, new)
    patch.status.update(new)
    _announce(body, previous, new, logger)
    if new.get("routedTo") != previous.get("routedTo"):
        request_compile()


def published_policy(experiment_id: str) -> ExperimentPolicy | None:
    ours = settings.current()
    secret = kube.get("v1", "Secret", ours.config_secret, ours.namespace)
    try:
        text = base64.b64decode(((secret or {}).get("data") or {})[GATEWAY_CONFIG_KEY])
        config = GatewayConfig.model_validate_json(text)
    except (KeyError, ValueError):
        return None
    return config.experiments.get(experiment_id)


def due(previous: dict[str, Any], policy: ExperimentPolicy, now: datetime.datetime) -> bool:
    last = previous.get("lastAnalyzed")
    if last is None or previous.get("epoch") != policy.epoch:
        return True
    elapsed = now - datetime.datetime.fromisoformat(last.replace("Z", "+00:00"))
    return elapsed.total_seconds() >= policy.analysis.interval_s


def _stamp(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def experiment_status(
    previous: dict[str, Any], found: Report, policy: dict[str, str], now: datetime.datetime
) -> dict[str, Any]:
    """The status after one analysis: figures always, the verdict once reached (kept until
    a new epoch), and where the policy sends all traffic."""
    figures = found.to_status()
    generation = None
    new_epoch = previous.get("epoch") != found.policy.epoch
    verdict = dict(previous.get("verdict") or {})
    routed_to = None if new_epoch else previous.get("routedTo")
    if new_epoch or verdict.get("decision") in (None, "Running"):
        verdict = {**figures["verdict"], "decidedAt": None}
        if verdict["decision"] != "Running":
            verdict["decidedAt"] = _stamp(now)
    decision = verdict["decision"]
    if routed_to is None:
        if decision == "ShipVariant" and policy.get("onWin") == "Promote":
            routed_to = verdict.get("winner")
        elif decision == "Rollback" and policy.get("onHarm", "Rollback") == "Rollback":
            routed_to = found.policy.control
    primary = next(
        (r for r in figures["results"] if r["metric"] == found.policy.primary.name), None
    )
    phase = {
        "Running": "Running",
        "ShipVariant": "Promoted" if routed_to else "Concluded",
        "Rollback": "RolledBack" if routed_to else "Concluded",
    }.get(decision, "Concluded")
    srm = figures["srm"]
    conditions = merged(
        previous.get("conditions"),
        condition("Ready", True, "Analysed", f"epoch {found.policy.epoch}", generation),
        condition(
            "SampleRatioMismatch",
            bool(srm["detected"]),
            "Detected" if srm["detected"] else "NotDetected",
            f"chi-square p={srm['pValue']:.3g}" if srm["pValue"] is not None else "",
            generation,
        ),
        condition(
            "GuardrailBreached",
            decision == "Rollback",
            "Breached" if decision == "Rollback" else "Holding",
            verdict.get("reason", "") if decision == "Rollback" else "",
            generation,
        ),
        condition(
            "Concluded",
            decision != "Running",
            decision,
            verdict.get("reason", ""),
            generation,
        ),
    )
    return {
        "phase": phase,
        "epoch": found.policy.epoch,
        "routedTo": routed_to,
        "variants": figures["variants"],
        "results": figures["results"],
        "srm": srm,
        "verdict": verdict,
        "lastAnalyzed": _stamp(now),
        "lift": _percent(primary["lift"]) if primary else None,
        "pValue": f"{primary['pValue']:.3g}" if primary and primary["pValue"] is not None else None,
        "conditions": conditions,
    }


def _percent(lift: float | None) -> str | None:
    return None if lift is None else f"{lift * 100:+.1f}%"


def no_state_status(
    previous: dict[str, Any], body: kopf.Body, now: datetime.datetime
) -> dict[str, Any]:
    message = "the gateways keep no shared state (no Redis URL): nothing to analyse"
    return {
        "phase": "NoData",
        "conditions": merged(
            previous.get("conditions"),
            condition("Ready", False, "NoSharedState", message, body["metadata"].get("generation")),
        ),
    }


def _announce(body: kopf.Body, previous: dict[str, Any], new: dict[str, Any], logger: Any) -> None:
    """A Kubernetes Event when the verdict or the routing changes."""
    before = (previous.get("verdict") or {}).get("decision")
    after = new["verdict"]["decision"]
    if after != before and after != "Running":
        message = f"{after}: {new['verdict'].get('reason', '')}"
        if after in ("Rollback", "Invalid"):
            kopf.warn(body, reason="Verdict", message=message)
        else:
            kopf.info(body, reason="Verdict", message=message)
        logger.info("verdict %s", message)
    if new.get("routedTo") and new.get("routedTo") != previous.get("routedTo"):
        kopf.info(
            body, reason="Routed", message=f"all traffic now goes to variant {new['routedTo']}"
        )
