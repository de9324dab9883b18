"""Experiment assignment: the same in every process, shares as weighted, ramps and weight
changes that move as few units as they can."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter

from llmrouter.gateway.config import ExperimentMetric, ExperimentPolicy, ExperimentVariant
from llmrouter.gateway.experiments.assignment import assign, with_variant

UNITS = [f"ns/acme\x1fuser-{i}" for i in range(20_000)]


def policy(
    weights: dict[str, int], exposure: int = 100, routed_to: str | None = None
) -> ExperimentPolicy:
    return ExperimentPolicy(
        id="ns/exp",
        model="big",
        tenants=frozenset({"ns/acme"}),
        unit="user",
        variants=tuple(ExperimentVariant(name=n, model=n, weight=w) for n, w in weights.items()),
        control=next(iter(weights)),
        exposure_percent=exposure,
        epoch="e",
        routed_to=routed_to,
        primary=ExperimentMetric(name="feedback", direction="increase"),
    )


def variants(p: ExperimentPolicy, units: list[str]) -> list[str | None]:
    out = []
    for unit in units:
        trial = assign(p, unit)
        out.append(trial.variant.name if trial else None)
    return out


def within_binomial(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p))


def test_every_process_assigns_alike_whatever_its_hash_seed() -> None:
    p = policy({"a": 1, "b": 1, "c": 2}, 60)
    script = (
        "import json, sys\n"
        "from llmrouter.gateway.config import ExperimentPolicy\n"
        "from llmrouter.gateway.experiments.assignment import assign\n"
        "p = ExperimentPolicy.model_validate_json(sys.stdin.readline())\n"
        "units = json.loads(sys.stdin.readline())\n"
        "trials = [assign(p, u) for u in units]\n"
        "print(json.dumps([t.variant.name if t else None for t in trials]))\n"
    )
    stdin = p.model_dump_json() + "\n" + json.dumps(UNITS[:2000]) + "\n"
    runs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONSAFEPATH": "1"}
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            input=stdin,
            capture_output=True,
            check=True,
            text=True,
        )
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1] == variants(p, UNITS[:2000])


def test_shares_follow_weights_and_exposure() -> None:
    got = Counter(variants(policy({"a": 1, "b": 1, "c": 2}, exposure=60), UNITS))
    n = len(UNITS)
    assert within_binomial(got[None], n, 0.4)
    exposed = n - got[None]
    assert within_binomial(got["a"], exposed, 0.25)
    assert within_binomial(got["c"], exposed, 0.5)


def test_raising_exposure_moves_no_exposed_unit() -> None:
    before = variants(policy({"a": 1, "b": 1}, exposure=10), UNITS)
    after = variants(policy({"a": 1, "b": 1}, exposure=50), UNITS)
    assert all(b is None or b == a for b, a in zip(before, after, strict=True))
    assert within_binomial(sum(a is not None for a in after), len(UNITS), 0.5)


def test_a_weight_change_moves_the_fewest_units_toward_the_grown_variant() -> None:
    before = variants(policy({"a": 90, "b": 10}), UNITS)
    after = variants(policy({"a": 80, "b": 20}), UNITS)
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert {m for m in moved} == {("a", "b")}
    assert within_binomial(len(moved), len(UNITS), 0.10)


def test_a_routed_experiment_sends_everyone_to_one_variant() -> None:
    routed = policy({"a": 1, "b": 1}, exposure=10, routed_to="a")
    trials = [assign(routed, u) for u in UNITS[:500]]
    assert {t.variant.name for t in trials if t} == {"a"} and all(trials)
    assert not any(t.measured for t in trials if t)


def test_variant_overrides_and_prompt_prefix() -> None:
    v = ExperimentVariant(
        name="b", model="m", weight=1, overrides={"max_tokens": 9}, system_prompt_prefix="P: "
    )
    body = {"max_completion_tokens": 50, "messages": [{"role": "user", "content": "x"}]}
    assert with_variant(body, v) == {
        "max_tokens": 9,
        "messages": [{"role": "system", "content": "P: "}, {"role": "user", "content": "x"}],
    }
    system = {"messages": [{"role": "system", "content": "Sys"}, {"role": "user", "content": "x"}]}
    assert with_variant(system, v)["messages"][0] == {"role": "system", "content": "P: Sys"}
