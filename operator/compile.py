"""compile(resources) -> GatewayConfig: the one pure function both run modes share.

The operator calls it with what it reads from the API server; ``llmrouter serve`` calls it
with what it reads from YAML files. Same input, same output, byte for byte.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from llmrouter.gateway.config import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    ApiKeyEntry,
    Budget,
    CredentialRef,
    GatewayConfig,
    Limits,
    ModelRoute,
    OIDCProvider,
    Pricing,
    RoutingRule,
    StateOutagePolicy,
    TenantPolicy,
    Timeouts,
    Upstream,
)
from llmrouter.operator.api.common import Resource, parse_duration
from llmrouter.operator.api.experiment import Experiment
from llmrouter.operator.api.modeldeployment import ModelDeployment
from llmrouter.operator.api.slapolicy import SLAPolicy
from llmrouter.operator.api.tenant import Limits as LimitsSpec
from llmrouter.operator.api.tenant import Tenant
from llmrouter.operator.compile_guardrails import data_policy
from llmrouter.operator.names import SERVER_KEY, server_key_secret_name

LLAMACPP_PORT = 8080


@dataclass(frozen=True)
class Problem:
    """One reason the input cannot be compiled, naming the resource and the field."""

    ref: str
    field: str
    message: str
    left_out: Literal["object", "field"] = "object"
    """What is left out for it: the whole object, or only what ``field`` names (a model
    name, a fallback, one of a tenant's models or keys)."""
    conflict: bool = False
    """A model name another object holds: the newcomer's Conflict condition says so."""

    def __str__(self) -> str:
        return f"{self.ref}: {self.field}: {self.message}"


class CompileError(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Resources:
    """Everything compile reads.

    ``api_key_hashes`` maps (tenant id, key name) to the sha256 of the key: from the key
    Secrets in a cluster, from a keys file standalone. ``endpoints`` overrides where a
    llama.cpp model is reached (served name → base URLs); without it, the model's Service.
    """

    tenants: list[Tenant] = field(default_factory=list)
    models: list[ModelDeployment] = field(default_factory=list)
    experiments: list[Experiment] = field(default_factory=list)
    slapolicies: list[SLAPolicy] = field(default_factory=list)
    api_key_hashes: Mapping[tuple[str, str], str] = field(default_factory=dict)
    endpoints: Mapping[str, list[str]] = field(default_factory=dict)
    retiring_key_hashes: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """(tenant id, key name) → sha256 of the key it had before a rotation, while that key's
    overlap window lasts: both work, so clients can move to the new key without a gap."""
    incumbents: Mapping[str, str] = field(default_factory=dict)
    """Model name → ``ModelDeployment ns/name`` that had it in the configuration published
    before (see :func:`incumbents`): it keeps the name while it still claims it."""
    model_server_keys: bool = False
    """In a cluster: each llama.cpp server requires the key the operator made for it, and
    the gateway sends it (through the gateway namespace's copy of its Secret)."""


def incumbents(config: GatewayConfig) -> dict[str, str]:
    """Every name a published configuration serves → the ModelDeployment it came from."""
    owners = {name: route.source for name, route in config.models.items()}
    for alias, target in config.aliases.items():
        if target in config.models:
            owners[alias] = config.models[target].source
    return owners


def claim_order(obj: Resource) -> tuple[bool, datetime.datetime, str, str]:
    """Who claimed first: the oldest object, then namespace and name (objects read from
    files have no creation time: namespace and name alone)."""
    created = obj.metadata.creation_timestamp
    return (
        created is None,
        created or datetime.datetime.min.replace(tzinfo=datetime.UTC),
        obj.metadata.namespace,
        obj.metadata.name,
    )


def compile_config(resources: Resources) -> GatewayConfig:
    """The configuration, only when nothing had to be left out: ``llmrouter serve`` refuses
    a broken file. CompileError lists every problem."""
    config, problems = compile_resources(resources)
    if problems:
        raise CompileError(problems)
    return config


def compile_resources(resources: Resources) -> tuple[GatewayConfig, list[Problem]]:
    """The configuration of everything that compiles, and the problems of what was left
    out. Each broken object or reference drops only itself (a Tenant naming an unknown
    model keeps its other models): the operator always publishes this, so one bad object
    never freezes the others' configuration, revoked keys included."""
    problems: list[Problem] = []
    resources = _unique_objects(resources, problems)
    while True:
        config, found = _compile_once(resources)
        whole = [p for p in found if p.left_out == "object"]
        if not whole:
            from llmrouter.operator.compile_experiments import compile_experiments
            from llmrouter.operator.compile_slos import compile_slos

            experiments, refused = compile_experiments(resources.experiments, config)
            slos = compile_slos(resources.slapolicies)
            config = config.model_copy(update={"experiments": experiments, "slos": slos})
            return config, problems + found + refused
        # Objects left out whole free what they claimed, and may turn others' references
        # into problems: compile again without them.
        problems += whole
        bad = {p.ref for p in whole}
        resources = dataclasses.replace(
            resources,
            tenants=[t for t in resources.tenants if t.ref not in bad],
            models=[m for m in resources.models if m.ref not in bad],
        )


def _compile_once(resources: Resources) -> tuple[GatewayConfig, list[Problem]]:
    problems: list[Problem] = []
    without_oidc = _check_unique_oidc(resources.tenants, problems)
    owners = _claim_names(resources.models, resources.incumbents, problems)
    fallbacks = _fallbacks(resources.models, owners, problems)
    models = {
        md.served_name: _model_route(md, resources, owners, fallbacks[md.ref])
        for md in sorted(resources.models, key=lambda m: m.served_name)
        if owners.get(md.served_name) is md
    }
    aliases = {
        name: md.served_name
        for name, md in sorted(owners.items())
        if name != md.served_name and md.served_name in models
    }
    tenants = {}
    for tenant in sorted(resources.tenants, key=lambda t: t.tenant_id):
        tenants[tenant.tenant_id] = _tenant_policy(
            tenant, owners, problems, oidc=tenant.ref not in without_oidc
        )
    api_keys = _api_keys(resources, problems)
    config = GatewayConfig(models=models, aliases=aliases, tenants=tenants, api_keys=api_keys)
    return config, problems


def _unique_objects(resources: Resources, problems: list[Problem]) -> Resources:
    """The first definition of each object (files may hold two; the API server cannot)."""
    seen: set[str] = set()

    def first(obj: Resource) -> bool:
        if obj.ref in seen:
            problems.append(Problem(obj.ref, "metadata.name", "defined more than once"))
            return False
        seen.add(obj.ref)
        return True

    return dataclasses.replace(
        resources,
        models=[md for md in resources.models if first(md)],
        tenants=[t for t in resources.tenants if first(t)],
    )


def _check_unique_oidc(tenants: Iterable[Tenant], problems: list[Problem]) -> set[str]:
    """An (issuer, audience) pair belongs to one tenant: a token of that pair would otherwise
    be one tenant's or another's by a header, and a tenant naming another's issuer with its
    own jwksURL would mint tokens for it. The refs of the tenants that lose their OIDC
    (only that: their API keys and models stay)."""
    owners: dict[tuple[str, str], Tenant] = {}
    losers: set[str] = set()
    # The oldest keeps it: a new Tenant cannot push an existing one off its identity provider.
    for tenant in sorted(tenants, key=claim_order):
        oidc = tenant.spec.auth.oidc
        if oidc is None:
            continue
        pair = (oidc.issuer.rstrip("/"), oidc.audience)
        other = owners.setdefault(pair, tenant)
        if other is not tenant:
            problems.append(
                Problem(
                    tenant.ref,
                    "spec.auth.oidc",
                    f"issuer {pair[0]!r} with audience {pair[1]!r} is already {other.ref}'s",
                    left_out="field",
                    conflict=True,
                )
            )
            losers.add(tenant.ref)
    return losers


def _claim_names(
    models: Iterable[ModelDeployment], incumbents: Mapping[str, str], problems: list[Problem]
) -> dict[str, ModelDeployment]:
    """Every name a client may send (served names and aliases) → the model that owns it.

    A name belongs to whoever holds it in the published configuration, else to the oldest
    claimant: a new object, in any namespace, never takes over a name and its traffic. A
    model that loses its served name is left out whole; one that loses an alias only that.
    """
    claims: dict[str, list[tuple[ModelDeployment, str]]] = {}
    for md in models:
        named = [("spec.servedName", md.served_name)]
        named += [(f"spec.aliases[{i}]", alias) for i, alias in enumerate(md.spec.aliases)]
        for where, name in named:
            mine = claims.setdefault(name, [])
            if all(other is not md for other, _ in mine):
                mine.append((md, where))
    owners: dict[str, ModelDeployment] = {}
    for name, claimants in sorted(claims.items()):
        ordered = sorted(
            claimants, key=lambda c: (c[0].ref != incumbents.get(name), claim_order(c[0]))
        )
        owner = owners[name] = ordered[0][0]
        for md, where in ordered[1:]:
            problems.append(
                Problem(
                    md.ref,
                    where,
                    f"model name {name!r} is already claimed by {owner.ref}",
                    left_out="object" if where == "spec.servedName" else "field",
                    conflict=True,
                )
            )
    return owners


def _model_route(
    md: ModelDeployment,
    resources: Resources,
    owners: Mapping[str, ModelDeployment],
    fallbacks: tuple[str, ...],
) -> ModelRoute:
    spec = md.spec
    if spec.external is not None:
        ext = spec.external
        secret = ext.api_key_secret_ref
        upstreams: tuple[Upstream, ...] = (
            Upstream(
                base_url=ext.base_url.rstrip("/"),
                protocol="openai" if ext.provider == "openai-compatible" else ext.provider,
                model=ext.model,
                credential=CredentialRef(
                    secret=secret.name, key=secret.key, namespace=md.metadata.namespace
                )
                if secret
                else None,
                deployment=ext.deployment,
                api_version=ext.api_version,
            ),
        )
    else:
        urls = resources.endpoints.get(md.served_name) or [
            f"http://{md.metadata.name}.{md.metadata.namespace}.svc:{LLAMACPP_PORT}/v1"
        ]
        server_key = (
            CredentialRef(
                secret=server_key_secret_name(md.metadata.name),
                key=SERVER_KEY,
                namespace=md.metadata.namespace,
            )
            if resources.model_server_keys
            else None
        )
        upstreams = tuple(Upstream(base_url=url.rstrip("/"), credential=server_key) for url in urls)
    return ModelRoute(
        name=md.served_name,
        source=md.ref,
        engine=spec.engine,
        aliases=tuple(sorted({a for a in spec.aliases if owners.get(a) is md} - {md.served_name})),
        upstreams=upstreams,
        pricing=Pricing(
            input_per_million_usd=Decimal(spec.pricing.input_per_million),
            output_per_million_usd=Decimal(spec.pricing.output_per_million),
        ),
        fallbacks=fallbacks,
        slots=spec.llamacpp.parallel if spec.llamacpp else None,
        max_output_tokens=spec.max_output_tokens
        or (spec.llamacpp.context_size if spec.llamacpp else DEFAULT_MAX_OUTPUT_TOKENS),
        timeouts=Timeouts(
            connect_s=parse_duration(spec.timeouts.connect),
            first_token_s=parse_duration(spec.timeouts.first_token),
            total_s=parse_duration(spec.timeouts.total),
        ),
    )


def _fallbacks(
    models: Iterable[ModelDeployment],
    owners: Mapping[str, ModelDeployment],
    problems: list[Problem],
) -> dict[str, tuple[str, ...]]:
    """Each model's usable fallbacks (by ref): a typo or a cycle drops that fallback only,
    never the model and, with it, every Tenant that lists the model."""
    kept: dict[str, dict[int, str]] = {}
    for md in sorted(models, key=lambda m: m.ref):
        if owners.get(md.served_name) is not md:
            continue  # left out whole
        mine = kept[md.ref] = {}
        for i, name in enumerate(md.spec.fallbacks):
            target = owners.get(name)
            if target is None:
                problems.append(
                    Problem(
                        md.ref, f"spec.fallbacks[{i}]", f"unknown model {name!r}", left_out="field"
                    )
                )
            elif target is md:
                problems.append(
                    Problem(
                        md.ref,
                        f"spec.fallbacks[{i}]",
                        "a model cannot fall back to itself",
                        left_out="field",
                    )
                )
            else:
                mine[i] = name
    while True:
        graph = {
            md.served_name: [owners[name].served_name for name in kept[md.ref].values()]
            for md in models
            if md.ref in kept
        }
        cycle = _find_cycle(graph)
        if not cycle:
            break
        # The edge that closes the cycle goes, and the cycle with it.
        md, closing = owners[cycle[-2]], cycle[-1]
        i = next(i for i, name in kept[md.ref].items() if owners[name].served_name == closing)
        del kept[md.ref][i]
        problems.append(
            Problem(
                md.ref,
                f"spec.fallbacks[{i}]",
                "fallback cycle: " + " → ".join(cycle),
                left_out="field",
            )
        )
    return {ref: tuple(names.values()) for ref, names in kept.items()}


def _find_cycle(graph: Mapping[str, list[str]]) -> list[str] | None:
    """The first cycle met in a depth-first walk, as a path that ends where it starts."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for nxt in graph.get(node, []):
            found = visit(nxt, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def _tenant_policy(
    tenant: Tenant,
    owners: Mapping[str, ModelDeployment],
    problems: list[Problem],
    *,
    oidc: bool = True,
) -> TenantPolicy:
    allowed: set[str] = set()
    for i, name in enumerate(tenant.spec.models):
        if name == "*":
            allowed.update(md.served_name for md in owners.values())
            continue
        md = owners.get(name)
        if md is None:
            problems.append(
                Problem(
                    tenant.ref, f"spec.models[{i}]", f"unknown model {name!r}", left_out="field"
                )
            )
        else:
            allowed.add(md.served_name)
    spec = tenant.spec
    budget = spec.budget
    provider = spec.auth.oidc if oidc else None
    return TenantPolicy(
        id=tenant.tenant_id,
        display_name=spec.display_name or tenant.metadata.name,
        models=frozenset(allowed),
        limits=_limits(spec.limits),
        budget=Budget(
            monthly_usd=Decimal(budget.monthly_usd),
            warn_at_percent=budget.warn_at_percent,
            block=budget.on_exceeded == "Block",
        )
        if budget
        else None,
        oidc=OIDCProvider(
            issuer=provider.issuer.rstrip("/"),
            audience=provider.audience,
            jwks_url=provider.jwks_url,
            groups_claim=provider.groups_claim,
            user_claim=provider.user_claim,
            roles=dict(sorted(provider.roles.items())),
        )
        if provider
        else None,
        rules=_rules(tenant, owners, allowed, problems),
        department=tenant.spec.cost_center.department,
        project=tenant.spec.cost_center.project,
        state_outage_policy=_OUTAGE_POLICIES.get(spec.state_outage_policy or ""),
        data_policy=data_policy(tenant, problems),
        audit_prompts=_AUDIT_PROMPTS[spec.audit.prompts],
        audit_retention_days=spec.audit.retention_days,
    )


_AUDIT_PROMPTS: dict[str, Literal["off", "hash", "redacted"]] = {
    "Off": "off",
    "Hash": "hash",
    "Redacted": "redacted",
}


_OUTAGE_POLICIES: dict[str, StateOutagePolicy] = {
    "FailOpen": "fail-open",
    "FailClosed": "fail-closed",
}


def _rules(
    tenant: Tenant,
    owners: Mapping[str, ModelDeployment],
    allowed: set[str],
    problems: list[Problem],
) -> tuple[RoutingRule, ...]:
    rules = []
    for i, rule in enumerate(tenant.spec.routing.rules):
        where = f"spec.routing.rules[{i}]"
        target = owners.get(rule.model)
        if target is None or target.served_name not in allowed:
            problems.append(
                Problem(
                    tenant.ref,
                    f"{where}.model",
                    f"{rule.model!r} is not a model this tenant may use",
                    left_out="field",
                )
            )
            continue
        requested = None
        if rule.match.model is not None:
            source = owners.get(rule.match.model)
            if source is None:
                problems.append(
                    Problem(
                        tenant.ref,
                        f"{where}.match.model",
                        f"unknown model {rule.match.model!r}",
                        left_out="field",
                    )
                )
                continue
            requested = source.served_name
        rules.append(
            RoutingRule(
                task_type=rule.match.task_type,
                requested=requested,
                metadata=dict(sorted(rule.match.metadata.items())),
                target=target.served_name,
            )
        )
    return tuple(rules)


def _limits(spec: LimitsSpec) -> Limits:
    return Limits.model_validate(spec.model_dump())


def _api_keys(resources: Resources, problems: list[Problem]) -> dict[str, ApiKeyEntry]:
    entries: dict[str, ApiKeyEntry] = {}
    for tenant in sorted(resources.tenants, key=lambda t: t.tenant_id):
        for i, key in enumerate(tenant.spec.api_keys):
            digest = resources.api_key_hashes.get((tenant.tenant_id, key.name))
            if digest is None:
                continue  # not generated yet, or not given standalone: no one can use it
            if digest in entries:
                other = entries[digest]
                problems.append(
                    Problem(
                        tenant.ref,
                        f"spec.apiKeys[{i}]",
                        f"key {key.name!r} has the same secret as {other.tenant}/{other.name}",
                        left_out="field",
                    )
                )
                continue
            entries[digest] = ApiKeyEntry(
                tenant=tenant.tenant_id,
                name=key.name,
                role=key.role,
                limits=_limits(key.limits) if key.limits else Limits(),
            )
            retiring = resources.retiring_key_hashes.get((tenant.tenant_id, key.name))
            if retiring is not None:
                # Never over another key: a clash leaves the old key out, silently, as it
                # is on its way out anyway.
                entries.setdefault(retiring, entries[digest])
    return dict(sorted(entries.items()))
