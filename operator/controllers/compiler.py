"""All resources → one compiled GatewayConfig Secret, recompiled soon after any change.

What cannot be compiled (a Tenant naming a model that does not exist, a model name another
model holds, a key Secret without a key) is left out alone and told so in a condition; it
never holds back the configuration of the others, which is always published.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from llmrouter.gateway.config import GatewayConfig, hash_api_key
from llmrouter.operator import kube, settings
from llmrouter.operator.api.common import API_VERSION, GROUP, VERSION
from llmrouter.operator.api.experiment import Experiment
from llmrouter.operator.api.modeldeployment import ModelDeployment
from llmrouter.operator.api.slapolicy import SLAPolicy
from llmrouter.operator.api.tenant import Tenant
from llmrouter.operator.compile import Problem, Resources, compile_resources, incumbents
from llmrouter.operator.controllers.conditions import condition, merged
from llmrouter.operator.names import (
    SERVER_KEY,
    label_value,
    provider_copy_name,
    server_key_secret_name,
)
from llmrouter.operator.render import (
    API_KEY_LABEL,
    GATEWAY_CONFIG_KEY,
    PREVIOUS_KEY_ANNOTATION,
    PREVIOUS_KEY_UNTIL_ANNOTATION,
    PROVIDER_CREDENTIAL_LABEL,
    SERVER_KEY_LABEL,
    TENANT_LABEL,
    render_gateway_config_secret,
    render_gateway_deployment,
    render_gateway_service,
    render_provider_secret_copy,
)

logger = logging.getLogger(__name__)

_changed: asyncio.Event | None = None


def request_compile() -> None:
    """Ask for a recompile; any thread may call it."""
    if _changed is not None and _loop is not None:
        _loop.call_soon_threadsafe(_changed.set)


_loop: asyncio.AbstractEventLoop | None = None


@dataclass
class Read:
    """What one compile starts from."""

    resources: Resources
    problems: list[Problem] = field(default_factory=list)
    """Of what could be read but not used (a key Secret without a readable key)."""
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Every Tenant and ModelDeployment compiled, by ref, as read: for their conditions."""
    published: dict[str, Any] | None = None
    """The configuration Secret as it is now."""
    retiring: dict[tuple[str, str], str] = field(default_factory=dict)
    """Keys replaced by a rotation whose overlap window is still open."""
    next_expiry: datetime.datetime | None = None
    """When the first of those windows closes: the configuration changes then."""


def read_resources() -> Read:
    ours = settings.current()
    read = Read(Resources())
    tenants, models = [], []
    for item in kube.list_objects(API_VERSION, "Tenant"):
        try:
            tenants.append(Tenant.model_validate(item))
        except ValidationError:
            continue  # its own handler reports why
        read.objects[tenants[-1].ref] = item
    for item in kube.list_objects(API_VERSION, "ModelDeployment"):
        try:
            models.append(ModelDeployment.model_validate(item))
        except ValidationError:
            continue
        read.objects[models[-1].ref] = item
    models = _with_consent(models, read)
    experiments = []
    # Newer than the other kinds: a cluster upgraded without its CRD must still publish.
    for item in kube.list_if_served(API_VERSION, "Experiment"):
        try:
            experiments.append(Experiment.model_validate(item))
        except ValidationError:
            continue
        read.objects[experiments[-1].ref] = item
    # What the gateways count for SLAPolicies: a source of compliance without Prometheus.
    slapolicies = []
    for item in kube.list_if_served(API_VERSION, "SLAPolicy"):
        try:
            slapolicies.append(SLAPolicy.model_validate(item))
        except ValidationError:
            continue  # its RulesReady condition says why
    read.published = kube.get("v1", "Secret", ours.config_secret, ours.namespace)
    read.resources = Resources(
        tenants=tenants,
        models=models,
        experiments=experiments,
        slapolicies=slapolicies,
        api_key_hashes=_key_hashes(tenants, read),
        retiring_key_hashes=read.retiring,
        incumbents=_published_names(read.published),
        model_server_keys=True,
    )
    return read


def consents(secret: dict[str, Any]) -> bool:
    """Whether a Secret may be sent upstream by the gateway: its owner labelled it so, or the
    operator made it (a llama-server's key). Without this, whoever may create a
    ModelDeployment could have a Secret they cannot read sent to a baseURL of their choice."""
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return "true" in (labels.get(PROVIDER_CREDENTIAL_LABEL), labels.get(SERVER_KEY_LABEL))


def _with_consent(models: list[ModelDeployment], read: Read) -> list[ModelDeployment]:
    """The models that may be compiled as far as their provider key goes: one naming a
    Secret that has not consented is left out whole (a missing Secret is the Ready
    condition's business: nothing is sent for it)."""
    kept = []
    for md in models:
        ref = md.spec.external.api_key_secret_ref if md.spec.external is not None else None
        if ref is not None:
            secret = kube.get("v1", "Secret", ref.name, md.metadata.namespace)
            labels = ((secret or {}).get("metadata") or {}).get("labels") or {}
            if secret is not None and labels.get(PROVIDER_CREDENTIAL_LABEL) != "true":
                read.problems.append(
                    Problem(
                        md.ref,
                        "spec.external.apiKeySecretRef",
                        f"Secret {ref.name} is not labelled {PROVIDER_CREDENTIAL_LABEL}=true, "
                        "so it is not sent to any provider; whoever owns it consents with "
                        f"`kubectl label secret {ref.name} {PROVIDER_CREDENTIAL_LABEL}=true "
                        f"-n {md.metadata.namespace}`",
                    )
                )
                continue
        kept.append(md)
    return kept


def _key_hashes(tenants: list[Tenant], read: Read) -> dict[tuple[str, str], str]:
    """(tenant id, key name) → hash of the key, from the labelled key Secrets. A Secret that
    holds no readable key leaves out that key alone: a freeze here would keep revoked keys
    working for everyone. Keys replaced by a rotation go to ``read.retiring`` until their
    overlap window closes."""
    now = datetime.datetime.now(datetime.UTC)
    by_label = {(t.metadata.namespace, label_value(t.metadata.name)): t for t in tenants}
    hashes = {}
    for secret in kube.list_objects(
        "v1", "Secret", label_selector=f"{TENANT_LABEL},{API_KEY_LABEL}"
    ):
        meta = secret["metadata"]
        labels = meta.get("labels") or {}
        tenant = by_label.get((meta["namespace"], labels.get(TENANT_LABEL, "")))
        if tenant is None:
            continue  # the Tenant is gone; its handler's ownerReference removes the Secret
        key_name = labels.get(API_KEY_LABEL, "")
        try:
            key = base64.b64decode((secret.get("data") or {})["apiKey"], validate=True).decode()
        except KeyError:
            why = "has no apiKey"
        except (ValueError, UnicodeDecodeError):
            why = "holds an apiKey that is not UTF-8 text in base64"
        else:
            hashes[(tenant.tenant_id, key_name)] = hash_api_key(key)
            _retiring(meta, (tenant.tenant_id, key_name), now, read)
            continue
        read.problems.append(
            Problem(
                tenant.ref,
                f"spec.apiKeys[{key_name}]",
                f"Secret {meta['name']} {why}; the key cannot be used",
                left_out="field",
            )
        )
    return hashes


def _retiring(
    meta: dict[str, Any], key: tuple[str, str], now: datetime.datetime, read: Read
) -> None:
    annotations = meta.get("annotations") or {}
    previous = annotations.get(PREVIOUS_KEY_ANNOTATION)
    try:
        until = datetime.datetime.fromisoformat(annotations[PREVIOUS_KEY_UNTIL_ANNOTATION])
    except (KeyError, ValueError):
        return
    if previous is None or until <= now:
        return
    read.retiring[key] = previous
    read.next_expiry = min(until, read.next_expiry or until)


def _published_names(secret: dict[str, Any] | None) -> dict[str, str]:
    """Who holds each model name now, from the published configuration: a name stays with
    its holder, even against an older object that claims it later."""
    try:
        text = base64.b64decode(((secret or {}).get("data") or {})[GATEWAY_CONFIG_KEY])
        return incumbents(GatewayConfig.model_validate_json(text))
    except (KeyError, ValueError):
        return {}


def copy_secrets(resources: Resources) -> list[Problem]:
    """The gateway may read Secrets of its own namespace only: the provider keys that
    ModelDeployments name, and the keys their llama-servers require, are copied there, and
    copies no longer named are removed. Each copy on its own: one that fails is reported
    on its ModelDeployments and holds back nothing else."""
    wanted: dict[tuple[str, str], set[str]] = {}
    users: dict[tuple[str, str], list[ModelDeployment]] = {}
    for md in resources.models:
        ns = md.metadata.namespace
        if md.spec.external is not None and md.spec.external.api_key_secret_ref is not None:
            ref = md.spec.external.api_key_secret_ref
            source, key = (ns, ref.name), ref.key
        elif md.spec.llamacpp is not None:
            source, key = (ns, server_key_secret_name(md.metadata.name)), SERVER_KEY
        else:
            continue
        wanted.setdefault(source, set()).add(key)
        users.setdefault(source, []).append(md)
    gateway_namespace = settings.current().namespace
    problems: list[Problem] = []
    keep: dict[str, tuple[str, str]] = {}
    for source, keys in sorted(wanted.items()):
        name = provider_copy_name(*source)
        if keep.setdefault(name, source) != source:  # only by a deliberate hash collision
            why = f"its copy's name {name} is taken by Secret {'/'.join(keep[name])}"
        else:
            try:
                copy_one(gateway_namespace, source, keys)
                continue
            except Exception as exc:  # this copy only: the others and the publish go on
                logger.warning("copying Secret %s/%s failed: %s", *source, exc)
                why = f"copying Secret {source[1]} to the gateway failed: {exc}"
        problems += [Problem(md.ref, "spec", why, left_out="field") for md in users.get(source, [])]
    for copy in kube.list_objects("v1", "Secret", gateway_namespace, PROVIDER_CREDENTIAL_LABEL):
        if copy["metadata"]["name"] not in keep:
            try:
                kube.delete("v1", "Secret", copy["metadata"]["name"], gateway_namespace)
            except Exception as exc:
                logger.warning("removing copy %s failed: %s", copy["metadata"]["name"], exc)
    return problems


def copy_one(gateway_namespace: str, source: tuple[str, str], keys: set[str]) -> None:
    namespace, name = source
    found = kube.get("v1", "Secret", name, namespace)
    data = {k: v for k, v in ((found or {}).get("data") or {}).items() if k in keys}
    # Checked again here: the label may have gone since the compile read it.
    if data and found is not None and consents(found):
        kube.apply(render_provider_secret_copy(gateway_namespace, namespace, name, data))
    else:
        # Gone at the source: the credential goes at the gateway too.
        kube.delete("v1", "Secret", provider_copy_name(namespace, name), gateway_namespace)


def compile_and_publish() -> tuple[str, datetime.datetime | None]:
    """The published configuration's fingerprint, and when it next changes by itself (a
    rotated key's overlap window closing)."""
    read = read_resources()
    problems = read.problems + copy_secrets(read.resources)
    config, compiled = compile_resources(read.resources)
    problems += compiled
    ours = settings.current()
    fingerprint = config.fingerprint()
    current = read.published
    if (
        current is None
        or (current["metadata"].get("annotations") or {}).get("llmrouter.io/config-fingerprint")
        != fingerprint
    ):
        kube.apply(render_gateway_config_secret(ours.config_secret, ours.namespace, config))
        logger.info(
            "published gateway configuration %s (%d models, %d tenants, %d keys)",
            fingerprint,
            len(config.models),
            len(config.tenants),
            len(config.api_keys),
        )
    report(read.objects, problems)
    return fingerprint, read.next_expiry


def compile_conditions(obj: dict[str, Any], problems: list[Problem]) -> list[dict[str, Any]]:
    """The object's conditions with Compiled and Conflict (a model name or an OIDC issuer
    that another object holds) set from what this compile found; equal to what it has when
    nothing changed."""
    generation = obj["metadata"].get("generation")
    left_out = any(p.left_out == "object" for p in problems)
    compiled = (
        condition("Compiled", True, "Compiled", "", generation)
        if not problems
        else condition(
            "Compiled",
            False,
            "LeftOut" if left_out else "PartlyLeftOut",
            "; ".join(f"{p.field}: {p.message}" for p in problems),
            generation,
        )
    )
    conflicts = [p for p in problems if p.conflict]
    conflict = condition(
        "Conflict",
        bool(conflicts),
        "ClaimedByAnother" if conflicts else "NoConflict",
        "; ".join(f"{p.field}: {p.message}" for p in conflicts),
        generation,
    )
    return merged((obj.get("status") or {}).get("conditions"), compiled, conflict)


def report(objects: dict[str, dict[str, Any]], problems: list[Problem]) -> None:
    """Each object's Compiled condition, written only where it changed: every status write
    is an event that asks for another compile."""
    by_ref: dict[str, list[Problem]] = {}
    for problem in problems:
        by_ref.setdefault(problem.ref, []).append(problem)
    for ref, obj in sorted(objects.items()):
        conditions = compile_conditions(obj, by_ref.get(ref, []))
        if conditions == (obj.get("status") or {}).get("conditions"):
            continue
        meta = obj["metadata"]
        try:
            kube.patch_status(
                API_VERSION,
                obj["kind"],
                meta["name"],
                meta["namespace"],
                {"conditions": conditions},
                resource_version=meta.get("resourceVersion"),
            )
        except Exception as exc:  # changed since read (its event recompiles), or gone
            reason = getattr(exc, "status", None) or exc
            logger.info("status of %s not written (%s); the next compile writes it", ref, reason)


@kopf.on.startup()
def apply_gateway(logger: Any, **_: Any) -> None:
    """The gateway Deployment and Service, in the operator's namespace."""
    for obj in (
        render_gateway_deployment(settings.current()),
        render_gateway_service(settings.current()),
    ):
        kube.apply(obj)
    logger.info("applied the gateway Deployment and Service in %s", settings.current().namespace)


@kopf.on.startup()
async def start_compiler(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
    global _changed, _loop
    _changed, _loop = asyncio.Event(), asyncio.get_running_loop()
    memo["compiler"] = asyncio.create_task(_compile_loop(_changed, settings))
    _changed.set()


@kopf.on.cleanup()
async def stop_compiler(memo: kopf.Memo, **_: Any) -> None:
    global _changed, _loop
    task = memo.get("compiler")
    if task is not None:
        task.cancel()
    # Requests after the stop have no loop to go to (it is about to close).
    _changed, _loop = None, None


def outranked(peering: dict[str, Any] | None, priority: int, now: datetime.datetime) -> bool:
    """Whether a live peer of higher priority is running: Kopf pauses this replica's
    handlers then, but not this loop, which must stand by as well."""
    for peer in ((peering or {}).get("status") or {}).values():
        if not isinstance(peer, dict) or int(peer.get("priority", 0)) <= priority:
            continue
        try:
            seen = datetime.datetime.fromisoformat(str(peer["lastseen"]))
        except (KeyError, ValueError):
            continue
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=datetime.UTC)
        if seen + datetime.timedelta(seconds=int(peer.get("lifetime", 60))) > now:
            return True
    return False


def standing_by(kopf_settings: kopf.OperatorSettings) -> bool:
    if kopf_settings.peering.standalone:
        return False
    peering = kube.get("kopf.dev/v1", "ClusterKopfPeering", kopf_settings.peering.name, None)
    return outranked(peering, kopf_settings.peering.priority, datetime.datetime.now(datetime.UTC))


async def _compile_loop(changed: asyncio.Event, kopf_settings: kopf.OperatorSettings) -> None:
    expiry: datetime.datetime | None = None
    while True:
        # Also every so often: provider key Secrets are not watched, and may change; and
        # when a rotated key's overlap closes, so that it stops working then.
        timeout = settings.current().resync_s
        if expiry is not None:
            left = (expiry - datetime.datetime.now(datetime.UTC)).total_seconds()
            timeout = min(timeout, max(0.0, left) + 0.1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)
        await asyncio.sleep(settings.current().compile_debounce_s)
        changed.clear()
        try:
            if await asyncio.to_thread(standing_by, kopf_settings):
                continue  # the active replica compiles; Kopf wakes this one if it goes
            _, expiry = await asyncio.to_thread(compile_and_publish)
        except Exception:  # the loop must outlive any one failure; the next change retries
            logger.exception("compiling the gateway configuration failed")
            await asyncio.sleep(1)
            changed.set()


@kopf.on.event(GROUP, VERSION, "tenants")
@kopf.on.event(GROUP, VERSION, "modeldeployments")
@kopf.on.event("v1", "secrets", labels={API_KEY_LABEL: kopf.PRESENT})
def resource_changed(**_: Any) -> None:
    request_compile()
