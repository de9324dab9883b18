"""compile(resources) -> GatewayConfig: the one pure function both run modes share.

The operator calls it with what it reads from the API server; ``llmrouter serve`` calls it
with what it reads from YAML files. Same input, same output, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from llmrouter.gateway.config import (
    ApiKeyEntry,
    Budget,
    CredentialRef,
    GatewayConfig,
    Limits,
    ModelRoute,
    OIDCProvider,
    Pricing,
    RoutingRule,
    TenantPolicy,
    Timeouts,
    Upstream,
)
from llmrouter.operator.api.common import parse_duration
from llmrouter.operator.api.modeldeployment import ModelDeployment
from llmrouter.operator.api.tenant import Limits as LimitsSpec
from llmrouter.operator.api.tenant import Tenant

LLAMACPP_PORT = 8080


@dataclass(frozen=True)
class Problem:
    """One reason the input cannot be compiled, naming the resource and the field."""

    ref: str
    field: str
    message: str

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
    api_key_hashes: Mapping[tuple[str, str], str] = field(default_factory=dict)
    endpoints: Mapping[str, list[str]] = field(default_factory=dict)


def compile_config(resources: Resources) -> GatewayConfig:
    problems: list[Problem] = []
    _check_unique_objects(resources, problems)
    _check_unique_oidc(resources.tenants, problems)
    owners = _claim_names(resources.models, problems)
    models = {
        md.served_name: _model_route(md, resources.endpoints)
        for md in sorted(resources.models, key=lambda m: m.served_name)
        if owners.get(md.served_name) is md
    }
    aliases = {
        name: md.served_name
        for name, md in sorted(owners.items())
        if name != md.served_name and md.served_name in models
    }
    _check_fallbacks(resources.models, owners, problems)
    tenants = {}
    for tenant in sorted(resources.tenants, key=lambda t: t.tenant_id):
        tenants[tenant.tenant_id] = _tenant_policy(tenant, owners, problems)
    api_keys = _api_keys(resources, problems)
    if problems:
        raise CompileError(problems)
    return GatewayConfig(models=models, aliases=aliases, tenants=tenants, api_keys=api_keys)


def _check_unique_objects(resources: Resources, problems: list[Problem]) -> None:
    seen: set[str] = set()
    for obj in [*resources.models, *resources.tenants]:
        if obj.ref in seen:
            problems.append(Problem(obj.ref, "metadata.name", "defined more than once"))
        seen.add(obj.ref)


def _check_unique_oidc(tenants: Iterable[Tenant], problems: list[Problem]) -> None:
    """An (issuer, audience) pair belongs to one tenant: a token of that pair would otherwise
    be one tenant's or another's by a header, and a tenant naming another's issuer with its
    own jwksURL would mint tokens for it."""
    owners: dict[tuple[str, str], Tenant] = {}
    for tenant in sorted(tenants, key=lambda t: t.tenant_id):
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
                )
            )


def _claim_names(
    models: Iterable[ModelDeployment], problems: list[Problem]
) -> dict[str, ModelDeployment]:
    """Every name a client may send (served names and aliases) → the model that owns it."""
    owners: dict[str, ModelDeployment] = {}
    for md in sorted(models, key=lambda m: m.ref):
        claims = [("spec.servedName", md.served_name)]
        claims += [(f"spec.aliases[{i}]", alias) for i, alias in enumerate(md.spec.aliases)]
        for where, name in claims:
            other = owners.get(name)
            if other is md:
                continue
            if other is not None:
                problems.append(
                    Problem(md.ref, where, f"model name {name!r} is already claimed by {other.ref}")
                )
                continue
            owners[name] = md
    return owners


def _model_route(md: ModelDeployment, endpoints: Mapping[str, list[str]]) -> ModelRoute:
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
        urls = endpoints.get(md.served_name) or [
            f"http://{md.metadata.name}.{md.metadata.namespace}.svc:{LLAMACPP_PORT}/v1"
        ]
        upstreams = tuple(Upstream(base_url=url.rstrip("/")) for url in urls)
    return ModelRoute(
        name=md.served_name,
        source=md.ref,
        engine=spec.engine,
        aliases=tuple(sorted(set(spec.aliases) - {md.served_name})),
        upstreams=upstreams,
        pricing=Pricing(
            input_per_million_usd=Decimal(spec.pricing.input_per_million),
            output_per_million_usd=Decimal(spec.pricing.output_per_million),
        ),
        fallbacks=tuple(spec.fallbacks),
        slots=spec.llamacpp.parallel if spec.llamacpp else None,
        timeouts=Timeouts(
            connect_s=parse_duration(spec.timeouts.connect),
            first_token_s=parse_duration(spec.timeouts.first_token),
            total_s=parse_duration(spec.timeouts.total),
        ),
    )


def _check_fallbacks(
    models: Iterable[ModelDeployment],
    owners: Mapping[str, ModelDeployment],
    problems: list[Problem],
) -> None:
    graph: dict[str, list[str]] = {}
    for md in models:
        targets = []
        for i, name in enumerate(md.spec.fallbacks):
            target = owners.get(name)
            if target is None:
                problems.append(Problem(md.ref, f"spec.fallbacks[{i}]", f"unknown model {name!r}"))
            elif target is md:
                problems.append(
                    Problem(md.ref, f"spec.fallbacks[{i}]", "a model cannot fall back to itself")
                )
            else:
                targets.append(target.served_name)
        graph[md.served_name] = targets
    cycle = _find_cycle(graph)
    if cycle:
        md = owners[cycle[0]]
        problems.append(Problem(md.ref, "spec.fallbacks", "fallback cycle: " + " → ".join(cycle)))


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
    tenant: Tenant, owners: Mapping[str, ModelDeployment], problems: list[Problem]
) -> TenantPolicy:
    allowed: set[str] = set()
    for i, name in enumerate(tenant.spec.models):
        if name == "*":
            allowed.update(md.served_name for md in owners.values())
            continue
        md = owners.get(name)
        if md is None:
            problems.append(Problem(tenant.ref, f"spec.models[{i}]", f"unknown model {name!r}"))
        else:
            allowed.add(md.served_name)
    spec = tenant.spec
    budget = spec.budget
    oidc = spec.auth.oidc
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
            issuer=oidc.issuer.rstrip("/"),
            audience=oidc.audience,
            jwks_url=oidc.jwks_url,
            groups_claim=oidc.groups_claim,
            user_claim=oidc.user_claim,
            roles=dict(sorted(oidc.roles.items())),
        )
        if oidc
        else None,
        rules=_rules(tenant, owners, allowed, problems),
        department=tenant.spec.cost_center.department,
        project=tenant.spec.cost_center.project,
    )


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
                )
            )
            continue
        requested = None
        if rule.match.model is not None:
            source = owners.get(rule.match.model)
            if source is None:
                problems.append(
                    Problem(
                        tenant.ref, f"{where}.match.model", f"unknown model {rule.match.model!r}"
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
                    )
                )
                continue
            entries[digest] = ApiKeyEntry(
                tenant=tenant.tenant_id,
                name=key.name,
                role=key.role,
                limits=_limits(key.limits) if key.limits else Limits(),
            )
    return dict(sorted(entries.items()))
