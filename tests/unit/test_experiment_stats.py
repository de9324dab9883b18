"""The experiment verdict's statistics, tested by seeded simulation: always-valid under
continuous peeking where a per-look t-test is not, the confidence sequence covers, the test has
power, SRM is caught, the delta method agrees with a bootstrap, the fixed-horizon figures agree
with scipy, and the decision rule takes each of its branches.

Simulations draw per-look sufficient statistics (exact for normal and Bernoulli data) or small
per-unit batches, so thousands of experiments with 100 looks each take well under a second."""

from __future__ import annotations

import json
import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from llmrouter.gateway.experiments.stats import (
    DEFAULT_TUNING_UNITS,
    AnalysisSettings,
    MetricSpec,
    RatioSums,
    VariantData,
    analyse,
    cs_half_width,
    mixture_rho,
    msprt_p_value,
    ratio_mean_var,
    srm_concentration,
    srm_tests,
)

Arr = npt.NDArray[np.float64]
ALPHA = 0.05
LOOKS = 100


def three_se_bound(alpha: float, experiments: int) -> float:
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / experiments)


def normal_looks(
    rng: np.random.Generator, experiments: int, per_look: int, mean: float, sd: float
) -> tuple[Arr, Arr, Arr]:
    """Cumulative (n, Σx, Σx²) at each of LOOKS looks, per_look new units per look, for normal
    data: a batch's mean and sum of squared deviations are independent N and σ²χ² draws."""
    shape = (experiments, LOOKS)
    batch_mean = rng.normal(mean, sd / math.sqrt(per_look), shape)
    batch_ss = sd * sd * rng.chisquare(per_look - 1, shape)
    m = np.cumsum(per_look * batch_mean, axis=1)
    mm = np.cumsum(batch_ss + per_look * batch_mean**2, axis=1)
    n = np.broadcast_to(per_look * np.arange(1, LOOKS + 1, dtype=np.float64), shape)
    return n, m, mm


def plain_mean_var(n: Arr, m: Arr, mm: Arr) -> tuple[Arr, Arr]:
    return ratio_mean_var(n, m, n, mm, n, m)


def sequential_looks(
    c: tuple[Arr, Arr], v: tuple[Arr, Arr], n_pair: Arr, rho: float
) -> tuple[Arr, Arr, Arr]:
    """delta, its standard error and the always-valid p at every look."""
    delta = v[0] - c[0]
    se = np.sqrt(v[1] + c[1])
    return delta, se, msprt_p_value(delta / se, n_pair, rho)


def test_aa_peeking_keeps_false_positives_within_alpha_and_a_per_look_t_test_does_not() -> None:
    rng = np.random.default_rng(20260101)
    experiments, per_look = 4000, 50
    rho = mixture_rho(ALPHA, DEFAULT_TUNING_UNITS)
    n, m_c, mm_c = normal_looks(rng, experiments, per_look, 3.0, 2.0)
    _, m_v, mm_v = normal_looks(rng, experiments, per_look, 3.0, 2.0)
    c, v = plain_mean_var(n, m_c, mm_c), plain_mean_var(n, m_v, mm_v)
    delta, se, p = sequential_looks(c, v, 2 * n, rho)

    sequential_fpr = float(np.mean((p <= ALPHA).any(axis=1)))
    t_p = 2 * stats.t.sf(np.abs(delta / se), df=2 * n - 2)
    naive_fpr = float(np.mean((t_p <= ALPHA).any(axis=1)))
    final_look_fpr = float(np.mean(t_p[:, -1] <= ALPHA))

    bound = three_se_bound(ALPHA, experiments)
    assert sequential_fpr <= bound, sequential_fpr
    # Peeking 100 times at a fixed-horizon test rejects a true null several times over alpha;
    # the single final look is fine, which shows the simulation itself is sound.
    assert naive_fpr > 3 * ALPHA, naive_fpr
    assert abs(final_look_fpr - ALPHA) <= 3 * math.sqrt(ALPHA * (1 - ALPHA) / experiments)


def test_aa_peeking_on_a_proportion_within_alpha() -> None:
    # An error rate of 2%: Bernoulli per unit, exact binomial batch sums.
    rng = np.random.default_rng(7)
    experiments, per_look, rate = 4000, 50, 0.02
    rho = mixture_rho(ALPHA, DEFAULT_TUNING_UNITS)
    n = np.broadcast_to(per_look * np.arange(1, LOOKS + 1, dtype=np.float64), (experiments, LOOKS))
    arms = []
    for _ in range(2):
        errors = np.cumsum(rng.binomial(per_look, rate, (experiments, LOOKS)), axis=1)
        arms.append(plain_mean_var(n, errors.astype(np.float64), errors.astype(np.float64)))
    # Early looks with no error yet in either arm have no spread: no evidence either way.
    with np.errstate(invalid="ignore"):
        _, _, p = sequential_looks(arms[0], arms[1], 2 * n, rho)
    fpr = float(np.mean((np.nan_to_num(p, nan=1.0) <= ALPHA).any(axis=1)))
    assert fpr <= three_se_bound(ALPHA, experiments), fpr


def per_user_batches(
    rng: np.random.Generator, experiments: int, looks: int, per_look: int, latency: float
) -> tuple[Arr, ...]:
    """Cumulative per-look sums (n, Σm, Σd, Σm², Σd², Σmd) of a per-user ratio metric: each
    user sends 1 + Poisson(3) requests whose latencies share a user-level factor, so requests
    of one user are correlated (the case the delta method is for)."""
    shape = (experiments, looks, per_look)
    d = 1.0 + rng.poisson(3.0, shape)
    user_factor = rng.lognormal(0.0, 0.5, shape)
    m = d * latency * user_factor + rng.normal(0.0, 0.2, shape) * np.sqrt(d)
    sums = [
        np.full((experiments, looks), float(per_look)),
        m.sum(axis=2),
        d.sum(axis=2),
        (m * m).sum(axis=2),
        (d * d).sum(axis=2),
        (m * d).sum(axis=2),
    ]
    return tuple(np.cumsum(s, axis=1) for s in sums)


def test_aa_peeking_on_a_per_user_ratio_metric_within_alpha() -> None:
    rng = np.random.default_rng(11)
    experiments, looks, per_look = 1500, 50, 20
    rho = mixture_rho(ALPHA, DEFAULT_TUNING_UNITS)
    c = ratio_mean_var(*per_user_batches(rng, experiments, looks, per_look, 1.0))
    v = ratio_mean_var(*per_user_batches(rng, experiments, looks, per_look, 1.0))
    n_pair = np.broadcast_to(2.0 * per_look * np.arange(1, looks + 1), (experiments, looks))
    _, _, p = sequential_looks(c, v, n_pair, rho)
    fpr = float(np.mean((p <= ALPHA).any(axis=1)))
    assert fpr <= three_se_bound(ALPHA, experiments), fpr


def test_confidence_sequence_covers_the_true_difference_at_every_look() -> None:
    rng = np.random.default_rng(3)
    experiments, per_look, true_delta = 4000, 50, 0.3
    rho = mixture_rho(ALPHA, DEFAULT_TUNING_UNITS)
    n, m_c, mm_c = normal_looks(rng, experiments, per_look, 10.0, 1.5)
    _, m_v, mm_v = normal_looks(rng, experiments, per_look, 10.0 + true_delta, 1.5)
    delta, se, _ = sequential_looks(
        plain_mean_var(n, m_c, mm_c), plain_mean_var(n, m_v, mm_v), 2 * n, rho
    )
    half = cs_half_width(se, 2 * n, rho, ALPHA)
    missed_ever = (np.abs(delta - true_delta) > half).any(axis=1)
    miss = float(np.mean(missed_ever))
    assert miss <= three_se_bound(ALPHA, experiments), miss
    # A fixed-horizon 95% interval, read at every look, misses far more often.
    fixed_miss = float(np.mean((np.abs(delta - true_delta) > 1.96 * se).any(axis=1)))
    assert fixed_miss > 3 * ALPHA, fixed_miss


def test_power_with_a_known_effect_at_a_documented_sample_size() -> None:
    """An effect of 0.08 standard deviations, 5000 units per arm looked at 100 times (50
    units per arm between looks), alpha = 0.05, mixture tuned for 10 000 units per pair: the
    always-valid test finds it in about 89% of experiments (a single fixed-horizon z-test at
    the end would in about 98%: the price of looking at any time)."""
    rng = np.random.default_rng(5)
    experiments, per_look, sd = 2000, 50, 1.0
    rho = mixture_rho(ALPHA, DEFAULT_TUNING_UNITS)
    n, m_c, mm_c = normal_looks(rng, experiments, per_look, 0.0, sd)
    _, m_v, mm_v = normal_looks(rng, experiments, per_look, 0.08 * sd, sd)
    delta, se, p = sequential_looks(
        plain_mean_var(n, m_c, mm_c), plain_mean_var(n, m_v, mm_v), 2 * n, rho
    )
    found = (p <= ALPHA) & (delta > 0)
    power = float(np.mean(found.any(axis=1)))
    fixed_power = float(np.mean(np.abs(delta[:, -1] / se[:, -1]) > 1.96))
    assert power >= 0.80, power
    assert fixed_power >= power


def test_srm_detected_for_51_49_at_200k_units_and_not_raised_for_50_50() -> None:
    rng = np.random.default_rng(13)
    settings = AnalysisSettings()
    conc = srm_concentration(settings.srm_alpha, DEFAULT_TUNING_UNITS)
    shares = np.array([0.5, 0.5])

    first = rng.binomial(200_000, 0.51, 500).astype(np.float64)
    counts = np.stack([first, 200_000 - first], axis=1)
    _, p, p_seq = srm_tests(counts, shares, conc)
    detected = (p < settings.srm_alpha) & (p_seq < settings.srm_alpha)
    assert detected.all()

    # 50/50, looked at 100 times on the way to 200k units.
    experiments, per_look = 4000, 2000
    steps = rng.binomial(per_look, 0.5, (experiments, LOOKS)).astype(np.float64)
    first = np.cumsum(steps, axis=1)
    total = per_look * np.arange(1, LOOKS + 1, dtype=np.float64)
    counts = np.stack([first, total - first], axis=-1)
    _, p, p_seq = srm_tests(counts, shares, conc)
    raised = ((p < settings.srm_alpha) & (p_seq < settings.srm_alpha)).any(axis=1)
    assert float(np.mean(raised)) <= three_se_bound(settings.srm_alpha, experiments)
    assert float(np.mean((p_seq < settings.srm_alpha).any(axis=1))) <= three_se_bound(
        settings.srm_alpha, experiments
    )
    # The chi-square alone, read at every look, raises false alarms many times over srmAlpha.
    assert float(np.mean((p < settings.srm_alpha).any(axis=1))) > 5 * settings.srm_alpha

    # Through analyse() as the operator calls it.
    def look(units: tuple[int, int]) -> bool:
        variants = [
            VariantData(name, 0.5, u, {}) for name, u in zip(("a", "b"), units, strict=True)
        ]
        out = analyse(variants, "a", MetricSpec("latency", "decrease"), [], settings, 0.0)
        assert out.srm.detected == (out.verdict.decision == "Invalid")
        return out.srm.detected

    assert look((102_000, 98_000))
    assert not look((100_150, 99_850))


def bootstrap_se(rng: np.random.Generator, m: Arr, d: Arr, resamples: int = 2000) -> float:
    weights = rng.multinomial(len(m), np.full(len(m), 1.0 / len(m)), size=resamples)
    return float(np.std((weights @ m) / (weights @ d), ddof=1))


def unit_sums(m: Arr, d: Arr) -> RatioSums:
    return RatioSums(
        len(m), float(m.sum()), float(d.sum()), float(m @ m), float(d @ d), float(m @ d)
    )


@pytest.mark.parametrize("case", ["latency per user", "errors per user", "per request"])
def test_delta_method_standard_error_within_10_percent_of_a_unit_bootstrap(case: str) -> None:
    rng = np.random.default_rng({"latency per user": 1, "errors per user": 2}.get(case, 3))
    units = 2000
    if case == "latency per user":
        d = 1.0 + rng.poisson(4.0, units)
        m = d * rng.lognormal(0.0, 0.6, units) + rng.normal(0, 0.3, units) * np.sqrt(d)
    elif case == "errors per user":
        # Some users hit errors far more often than others: errors cluster by user.
        d = 1.0 + rng.geometric(0.2, units)
        m = rng.binomial(d.astype(np.int64), rng.beta(0.2, 4.0, units)).astype(np.float64)
    else:
        d = np.ones(units)
        m = rng.exponential(0.8, units)
    num, den = np.asarray(m, dtype=np.float64), np.asarray(d, dtype=np.float64)
    s = unit_sums(num, den)
    _, var = ratio_mean_var(s.n, s.m, s.d, s.mm, s.dd, s.md)
    delta_se = math.sqrt(float(var))
    boot = bootstrap_se(rng, num, den)
    assert abs(delta_se / boot - 1) < 0.10, (delta_se, boot)


def test_fixed_horizon_figures_agree_with_scipy() -> None:
    rng = np.random.default_rng(17)
    x_c = rng.lognormal(0.0, 0.7, 1500)
    x_v = rng.lognormal(0.05, 0.7, 1700)
    ones_c, ones_v = np.ones_like(x_c), np.ones_like(x_v)
    variants = [
        VariantData("control", 0.5, len(x_c), {"latency": unit_sums(x_c, ones_c)}),
        VariantData("fast", 0.5, len(x_v), {"latency": unit_sums(x_v, ones_v)}),
    ]
    out = analyse(
        variants, "control", MetricSpec("latency", "decrease"), [], AnalysisSettings(), 0.0
    )
    (r,) = out.results
    assert r.mean == pytest.approx(np.mean(x_v), rel=1e-12)
    assert r.control_mean == pytest.approx(np.mean(x_c), rel=1e-12)
    assert r.delta == pytest.approx(np.mean(x_v) - np.mean(x_c), rel=1e-9)
    assert r.lift == pytest.approx((np.mean(x_v) - np.mean(x_c)) / np.mean(x_c), rel=1e-9)
    welch = stats.ttest_ind(x_v, x_c, equal_var=False)
    assert r.z == pytest.approx(welch.statistic, rel=1e-9)
    se = math.sqrt(np.var(x_v, ddof=1) / len(x_v) + np.var(x_c, ddof=1) / len(x_c))
    assert r.std_error == pytest.approx(se, rel=1e-9)
    # The always-valid figures are functions of those, with rho tuned for the default size.
    rho = mixture_rho(0.05, DEFAULT_TUNING_UNITS)
    n = len(x_c) + len(x_v)
    assert r.p_value == pytest.approx(float(msprt_p_value(welch.statistic, n, rho)), rel=1e-9)
    half = float(cs_half_width(se, n, rho, 0.05))
    assert r.delta is not None and r.p_value is not None
    assert r.interval_low == pytest.approx(r.delta - half, rel=1e-9)
    assert r.interval_high == pytest.approx(r.delta + half, rel=1e-9)
    # Always-valid is more cautious than fixed-horizon at the same look.
    assert r.p_value >= welch.pvalue
    assert half > stats.norm.ppf(0.975) * se

    # A proportion: same numbers as a Welch test on the 0/1 outcomes.
    e_c = (rng.random(3000) < 0.03).astype(np.float64)
    e_v = (rng.random(3000) < 0.05).astype(np.float64)
    m_c, v_c = ratio_mean_var(len(e_c), e_c.sum(), len(e_c), e_c.sum(), len(e_c), e_c.sum())
    m_v, v_v = ratio_mean_var(len(e_v), e_v.sum(), len(e_v), e_v.sum(), len(e_v), e_v.sum())
    z = (m_v - m_c) / math.sqrt(v_v + v_c)
    assert float(z) == pytest.approx(stats.ttest_ind(e_v, e_c, equal_var=False).statistic)

    counts = np.array([3050.0, 2950.0, 1010.0])
    shares = np.array([0.43, 0.43, 0.14])
    chi2, p, _ = srm_tests(counts, shares, 100.0)
    ref = stats.chisquare(counts, counts.sum() * shares)
    assert float(chi2) == pytest.approx(ref.statistic)
    assert float(p) == pytest.approx(ref.pvalue)


# --- the decision rule --------------------------------------------------------------------------


def plain(n: int, mean: float, sd: float) -> RatioSums:
    """Sums of n per-request values with this sample mean and standard deviation."""
    m = n * mean
    return RatioSums(n, m, float(n), (n - 1) * sd * sd + n * mean * mean, float(n), m)


LATENCY = MetricSpec("latency", "decrease")
ERRORS = MetricSpec("errorRate", "decrease", margin=0.01)
FEEDBACK = MetricSpec("feedback", "increase", margin=0.2)


def variant(
    name: str, units: int, latency: float, error_rate: float, share: float = 0.5
) -> VariantData:
    err_sd = math.sqrt(error_rate * (1 - error_rate))
    return VariantData(
        name,
        share,
        units,
        {
            "latency": plain(units, latency, 1.0),
            "errorRate": plain(units, error_rate, err_sd),
            "feedback": plain(units, 4.0, 1.0),
        },
    )


def decide(
    variants: list[VariantData], settings: AnalysisSettings | None = None
) -> tuple[str, str | None]:
    out = analyse(
        variants, "control", LATENCY, [ERRORS, FEEDBACK], settings or AnalysisSettings(), 0.0
    )
    json.dumps(out.to_status(), allow_nan=False)
    return out.verdict.decision, out.verdict.winner


def test_ship_when_primary_better_and_guardrails_non_inferior() -> None:
    assert decide([variant("control", 20_000, 2.0, 0.02), variant("new", 20_000, 1.8, 0.02)]) == (
        "ShipVariant",
        "new",
    )


def test_rollback_when_a_guardrail_is_harmed_beyond_its_margin() -> None:
    # Faster, but errors up by 6 points against a 1-point margin: rollback beats shipping.
    got = decide([variant("control", 5000, 2.0, 0.02), variant("new", 5000, 1.5, 0.08)])
    assert got == ("Rollback", "control")


def test_rollback_of_one_variant_wins_over_another_variant_shipping() -> None:
    got = decide(
        [
            variant("control", 5000, 2.0, 0.02, 1 / 3),
            variant("good", 5000, 1.8, 0.02, 1 / 3),
            variant("bad", 5000, 2.0, 0.10, 1 / 3),
        ]
    )
    assert got == ("Rollback", "control")


def test_running_while_a_guardrail_is_not_yet_shown_within_its_margin() -> None:
    # Clearly faster, errors equal but too few units to bound them within one point.
    got = decide([variant("control", 800, 2.0, 0.05), variant("new", 800, 1.5, 0.05)])
    assert got == ("Running", None)


def test_inconclusive_at_max_units_and_at_max_duration() -> None:
    same = [variant("control", 5000, 2.0, 0.02), variant("new", 5000, 2.0, 0.02)]
    assert decide(same) == ("Running", None)
    assert decide(same, AnalysisSettings(max_units=10_000)) == ("Inconclusive", None)
    out = analyse(same, "control", LATENCY, [ERRORS], AnalysisSettings(max_duration_s=3600), 3600.0)
    assert out.verdict.decision == "Inconclusive"
    out = analyse(same, "control", LATENCY, [ERRORS], AnalysisSettings(max_duration_s=3600), 60.0)
    assert out.verdict.decision == "Running"


def test_invalid_on_sample_ratio_mismatch_even_with_a_winner() -> None:
    got = decide([variant("control", 21_000, 2.0, 0.02), variant("new", 19_000, 1.5, 0.02)])
    assert got == ("Invalid", None)
    # Units in a variant weighted 0.
    got = decide(
        [
            variant("control", 5000, 2.0, 0.02, 1.0),
            variant("new", 5000, 2.0, 0.02, 0.5),
            variant("off", 3, 2.0, 0.02, 0.0),
        ]
    )
    assert got == ("Invalid", None)


def test_no_call_below_min_units_per_variant() -> None:
    variants = [variant("control", 150, 2.0, 0.0), variant("new", 150, 1.0, 0.0)]
    out = analyse(variants, "control", LATENCY, [ERRORS], AnalysisSettings(), 0.0)
    assert out.verdict.decision == "Running"
    assert {r.call for r in out.results} == {"Undecided"}
    # The same data with a lower minimum is a clear win.
    out = analyse(
        variants, "control", LATENCY, [], AnalysisSettings(min_units_per_variant=100), 0.0
    )
    assert out.verdict.decision == "ShipVariant"
    assert out.results[0].call == "Better"


def test_calls_and_status_shape() -> None:
    variants = [variant("control", 30_000, 2.0, 0.02), variant("new", 30_000, 2.0, 0.02)]
    out = analyse(variants, "control", LATENCY, [ERRORS, FEEDBACK], AnalysisSettings(), 0.0)
    calls = {r.metric: r.call for r in out.results}
    # Identical figures: within each margin (Flat), undecided where there is no margin.
    assert calls == {"latency": "Undecided", "errorRate": "Flat", "feedback": "Flat"}
    status = json.loads(json.dumps(out.to_status(), allow_nan=False))
    assert set(status) == {"results", "srm", "verdict"}
    assert set(status["results"][0]) == {
        "metric", "variant", "n", "mean", "controlMean", "delta", "lift", "interval", "pValue",
        "call",
    }  # fmt: skip
    assert set(status["srm"]) == {"chiSquare", "pValue", "sequentialPValue", "detected"}
    assert status["verdict"] == {
        "decision": "Running",
        "winner": None,
        "reason": "no variant is decided yet",
    }

    # A metric a variant has no data for yet (no feedback given) is undecided, not an error.
    bare = [
        VariantData("control", 0.5, 500, {"latency": plain(500, 2.0, 1.0)}),
        VariantData("new", 0.5, 500, {"latency": plain(500, 2.0, 1.0)}),
    ]
    out = analyse(bare, "control", LATENCY, [FEEDBACK], AnalysisSettings(), 0.0)
    fb = out.results[1]
    assert (fb.n, fb.mean, fb.delta, fb.call) == (0, None, None, "Undecided")
    assert out.to_status()["results"][1]["interval"] is None
    json.dumps(out.to_status(), allow_nan=False)

    with pytest.raises(ValueError, match="control"):
        analyse(bare, "nope", LATENCY, [], AnalysisSettings(), 0.0)
