"""The verdict of an experiment: plain arithmetic over the sufficient statistics the gateway
keeps, no I/O.

- Each metric is a ratio Σm/Σd over the units of a variant (a plain mean when every unit is one
  request); its variance comes from the delta method, so a user's correlated requests are not
  counted as independent observations.
- The difference to control is judged by the normal-mixture mSPRT and the matching asymptotic
  confidence sequence: its p-value and interval hold at every look at once, however often the
  operator recomputes them (Ville's inequality), unlike a t-test repeated at each look.
- Sample-ratio mismatch: the chi-square test, and a Dirichlet-multinomial Bayes factor that
  stays valid under repeated looks; both must agree.

The core functions accept numpy arrays as well as floats so that simulations can run them
over thousands of experiments at once; ``analyse`` applies them to one look.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from scipy import special, stats

Direction = Literal["increase", "decrease"]
Call = Literal["Better", "Worse", "Flat", "Undecided"]
Decision = Literal["Running", "ShipVariant", "Rollback", "Inconclusive", "Invalid"]

# Without maxUnits the mixture is tuned for pairs of this many units in total: the interval is
# narrowest there, and only a log factor wider a decade either side.
DEFAULT_TUNING_UNITS = 10_000

ArrayOrFloat = TypeVar("ArrayOrFloat", float, npt.NDArray[np.float64])


@dataclass(frozen=True, slots=True)
class RatioSums:
    """Sufficient statistics of one metric in one variant, randomised by unit: over the units u
    with d_u > 0, sums of per-unit numerator m_u and denominator d_u (e.g. latency: m_u = the
    unit's summed latency, d_u = its requests; error rate: m_u = its errors, d_u = its
    requests; feedback: m_u = summed scores, d_u = feedbacks). The metric is the ratio
    sum(m)/sum(d); with unit=request every d_u is 1 and it is a plain mean."""

    n: int  # units with d_u > 0
    m: float  # Σ m_u
    d: float  # Σ d_u
    mm: float  # Σ m_u²
    dd: float  # Σ d_u²
    md: float  # Σ m_u d_u


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str  # errorRate | latency | ttft | costPerRequest | outputTokens | feedback
    direction: Direction  # which way is better
    # Guardrails: the non-inferiority margin, absolute in the metric's unit (errorRate 0.01 is
    # one percentage point; seconds; USD; tokens; score). None counts as 0.
    margin: float | None = None


@dataclass(frozen=True, slots=True)
class VariantData:
    name: str
    expected_share: float  # weight share among exposed units (sums to 1 over variants)
    units: int  # distinct units assigned to it (for SRM)
    metrics: Mapping[str, RatioSums]


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    alpha: float = 0.05
    srm_alpha: float = 0.001
    min_units_per_variant: int = 200
    max_units: int | None = None
    max_duration_s: float | None = None
    # Total units of a control-variant pair at which the confidence sequence is narrowest;
    # None: that pair's share of max_units, or DEFAULT_TUNING_UNITS without a max.
    tuning_units: int | None = None


@dataclass(frozen=True, slots=True)
class MetricResult:
    metric: str
    variant: str
    n: int  # the variant's units with data for this metric
    control_n: int
    mean: float | None
    control_mean: float | None
    delta: float | None  # variant - control
    lift: float | None  # delta / control mean
    interval_low: float | None  # always-valid interval for delta
    interval_high: float | None
    p_value: float | None  # always-valid p-value of delta = 0
    call: Call
    role: Literal["primary", "guardrail"] = "primary"
    std_error: float | None = None  # fixed-horizon standard error of delta
    z: float | None = None  # fixed-horizon delta / std_error
    # Guardrails: True when the whole interval is worse than the margin allows.
    breached: bool = False
    # Guardrails: True when the whole interval is better than the margin allows.
    non_inferior: bool = False

    def to_status(self) -> dict[str, Any]:
        interval = (
            None
            if self.interval_low is None or self.interval_high is None
            else [self.interval_low, self.interval_high]
        )
        return {
            "metric": self.metric,
            "variant": self.variant,
            "n": self.n,
            "mean": self.mean,
            "controlMean": self.control_mean,
            "delta": self.delta,
            "lift": self.lift,
            "interval": interval,
            "pValue": self.p_value,
            "call": self.call,
        }


@dataclass(frozen=True, slots=True)
class SrmResult:
    chi_square: float
    p_value: float  # fixed-horizon chi-square p-value
    sequential_p_value: float  # Dirichlet-multinomial, valid under repeated looks
    detected: bool

    def to_status(self) -> dict[str, Any]:
        return {
            "chiSquare": self.chi_square,
            "pValue": self.p_value,
            "sequentialPValue": self.sequential_p_value,
            "detected": self.detected,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    # ShipVariant: the winning variant; Rollback: control. The variant the policy would send
    # all traffic to, None while there is none.
    winner: str | None
    reason: str

    def to_status(self) -> dict[str, Any]:
        return {"decision": self.decision, "winner": self.winner, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Analysis:
    results: tuple[MetricResult, ...]
    srm: SrmResult
    verdict: Verdict
    total_units: int = 0
    warnings: tuple[str, ...] = field(default=())

    def to_status(self) -> dict[str, Any]:
        return {
            "results": [r.to_status() for r in self.results],
            "srm": self.srm.to_status(),
            "verdict": self.verdict.to_status(),
        }


# --- core arithmetic (floats or numpy arrays) -------------------------------------------------


def ratio_mean_var(
    n: Any, m: Any, d: Any, mm: Any, dd: Any, md: Any
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The ratio Σm/Σd and the delta-method variance of that estimate:
    Var ≈ (σ²_M/μ²_D + σ²_D μ²_M/μ⁴_D - 2 cov μ_M/μ³_D) / n, with per-unit sample moments
    (n - 1 in the denominator, so that with every d_u = 1 it is the usual s²/n).
    NaN where n < 2 or Σd = 0."""
    n_ = np.asarray(n, dtype=np.float64)
    m_, d_ = np.asarray(m, dtype=np.float64), np.asarray(d, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu_m, mu_d = m_ / n_, d_ / n_
        var_m = (np.asarray(mm, dtype=np.float64) - m_ * mu_m) / (n_ - 1)
        var_d = (np.asarray(dd, dtype=np.float64) - d_ * mu_d) / (n_ - 1)
        cov = (np.asarray(md, dtype=np.float64) - m_ * mu_d) / (n_ - 1)
        ratio = mu_m / mu_d
        var = (var_m - 2 * ratio * cov + ratio * ratio * var_d) / (mu_d * mu_d) / n_
        # Rounding may leave a tiny negative where the data do not vary at all.
        var = np.maximum(var, 0.0)
        bad = (n_ < 2) | (d_ <= 0)
    return np.where(bad, np.nan, ratio), np.where(bad, np.nan, var)


def mixture_rho(alpha: float, tuning_units: float) -> float:
    """The mixing scale rho (in standard deviations of one unit) that makes the confidence
    sequence narrowest at ``tuning_units`` (Howard et al. 2021, eq. for the normal mixture;
    GrowthBook uses the same)."""
    log_a = -2.0 * math.log(alpha)
    return math.sqrt((log_a + math.log(log_a + 1.0)) / tuning_units)


def msprt_p_value(z: Any, n: Any, rho: float) -> npt.NDArray[np.float64]:
    """Always-valid p-value of the normal-mixture SPRT: 1/E with
    E = exp(r z² / (2(r+1))) / √(r+1) with r = n·rho², z the fixed-horizon statistic and n the units
    behind it. P(p ≤ alpha at any look) ≤ alpha under the null."""
    nr = np.asarray(n, dtype=np.float64) * rho * rho
    z_ = np.asarray(z, dtype=np.float64)
    log_e = nr * z_ * z_ / (2.0 * (nr + 1.0)) - 0.5 * np.log1p(nr)
    return np.asarray(np.minimum(1.0, np.exp(-log_e)), dtype=np.float64)


def cs_half_width(se: Any, n: Any, rho: float, alpha: float) -> npt.NDArray[np.float64]:
    """Half-width of the (1 - alpha) asymptotic confidence sequence around an estimate with
    standard error ``se`` from n units: the set of effects the mSPRT does not reject,
    se · √((r+1)/r · (ln(r+1) - 2 ln alpha)), r = n·rho² (Waudby-Smith et al. 2021)."""
    nr = np.asarray(n, dtype=np.float64) * rho * rho
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.sqrt((nr + 1.0) / nr * (np.log1p(nr) - 2.0 * math.log(alpha)))
    return np.asarray(np.asarray(se, dtype=np.float64) * factor, dtype=np.float64)


def srm_tests(
    observed: Any, expected_shares: Any, concentration: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Chi-square statistic, its p-value, and the sequential p-value of Lindon & Malek (2022)
    for unit counts (last axis: variants) against expected shares. The sequential one is 1/BF,
    BF the Dirichlet(concentration · shares)-multinomial marginal likelihood over the
    multinomial likelihood under the expected shares: a test martingale in the units, so it
    holds under any number of looks."""
    x = np.asarray(observed, dtype=np.float64)
    p0 = np.asarray(expected_shares, dtype=np.float64)
    total = x.sum(axis=-1, keepdims=True)
    expected = total * p0
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(total[..., 0] > 0, ((x - expected) ** 2 / expected).sum(axis=-1), 0.0)
    p_chi2 = stats.chi2.sf(chi2, df=p0.shape[-1] - 1)
    a = concentration * p0
    log_bf = (
        special.gammaln(concentration)
        - special.gammaln(concentration + total[..., 0])
        + (special.gammaln(a + x) - special.gammaln(a)).sum(axis=-1)
        - special.xlogy(x, p0).sum(axis=-1)
    )
    p_seq = np.minimum(1.0, np.exp(-log_bf))
    return (
        np.asarray(chi2, dtype=np.float64),
        np.asarray(p_chi2, dtype=np.float64),
        np.asarray(p_seq, dtype=np.float64),
    )


def srm_concentration(alpha: float, tuning_units: float) -> float:
    """Dirichlet concentration with the same sensitivity profile as ``mixture_rho``: the prior
    variance of a share, p(1-p)/(c+1), matches rho² p(1-p)."""
    return max(1.0, 1.0 / mixture_rho(alpha, tuning_units) ** 2 - 1.0)


# --- one look ---------------------------------------------------------------------------------


def _finite(x: Any) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


def _compare(
    spec: MetricSpec,
    role: Literal["primary", "guardrail"],
    variant: VariantData,
    control: VariantData,
    rho: float,
    settings: AnalysisSettings,
) -> MetricResult:
    empty = RatioSums(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    v = variant.metrics.get(spec.name, empty)
    c = control.metrics.get(spec.name, empty)
    v_mean, v_var = (float(a) for a in ratio_mean_var(v.n, v.m, v.d, v.mm, v.dd, v.md))
    c_mean, c_var = (float(a) for a in ratio_mean_var(c.n, c.m, c.d, c.mm, c.dd, c.md))
    base = MetricResult(
        metric=spec.name,
        variant=variant.name,
        n=v.n,
        control_n=c.n,
        mean=_finite(v_mean),
        control_mean=_finite(c_mean),
        delta=None,
        lift=None,
        interval_low=None,
        interval_high=None,
        p_value=None,
        call="Undecided",
        role=role,
    )
    if not (math.isfinite(v_var) and math.isfinite(c_var)):
        return base
    delta = v_mean - c_mean
    se = math.sqrt(v_var + c_var)
    n = v.n + c.n
    if se > 0:
        z = delta / se
        p = float(msprt_p_value(z, n, rho))
        half = float(cs_half_width(se, n, rho, settings.alpha))
    else:
        # Neither arm varied at all (say no errors anywhere): the data carry no spread to
        # weigh the difference against, so only an exact tie says anything.
        z = 0.0 if delta == 0 else math.copysign(math.inf, delta)
        p = 1.0 if delta == 0 else 0.0
        half = 0.0
    lo, hi = delta - half, delta + half
    # Work on the "better" scale: positive is good whichever the direction.
    sign = 1.0 if spec.direction == "increase" else -1.0
    g_lo, g_hi = sorted((sign * lo, sign * hi))
    margin = abs(spec.margin) if spec.margin is not None else 0.0
    enough = v.n >= settings.min_units_per_variant and c.n >= settings.min_units_per_variant
    call: Call = "Undecided"
    if enough:
        if g_lo > 0:
            call = "Better"
        elif g_hi < 0:
            call = "Worse"
        elif margin > 0 and -margin < g_lo and g_hi < margin:
            call = "Flat"
    return MetricResult(
        metric=spec.name,
        variant=variant.name,
        n=v.n,
        control_n=c.n,
        mean=_finite(v_mean),
        control_mean=_finite(c_mean),
        delta=_finite(delta),
        lift=_finite(delta / c_mean) if c_mean != 0 else None,
        interval_low=_finite(lo),
        interval_high=_finite(hi),
        p_value=_finite(p),
        call=call,
        role=role,
        std_error=_finite(se),
        z=_finite(z),
        breached=enough and role == "guardrail" and g_hi < -margin,
        non_inferior=enough and role == "guardrail" and g_lo > -margin,
    )


def _srm(variants: Sequence[VariantData], settings: AnalysisSettings, tuning: float) -> SrmResult:
    # A variant meant to get nothing that got units is a mismatch no test needs to weigh.
    stray = [v for v in variants if v.expected_share <= 0 and v.units > 0]
    live = [v for v in variants if v.expected_share > 0]
    if stray:
        return SrmResult(chi_square=0.0, p_value=0.0, sequential_p_value=0.0, detected=True)
    if len(live) < 2 or sum(v.units for v in live) == 0:
        return SrmResult(0.0, 1.0, 1.0, False)
    shares = np.array([v.expected_share for v in live])
    shares = shares / shares.sum()
    counts = np.array([v.units for v in live], dtype=np.float64)
    chi2, p, p_seq = srm_tests(counts, shares, srm_concentration(settings.srm_alpha, tuning))
    return SrmResult(
        chi_square=float(chi2),
        p_value=float(p),
        sequential_p_value=float(p_seq),
        detected=bool(p < settings.srm_alpha and p_seq < settings.srm_alpha),
    )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def analyse(
    variants: Sequence[VariantData],
    control: str,
    primary: MetricSpec,
    guardrails: Sequence[MetricSpec],
    settings: AnalysisSettings,
    elapsed_s: float,
) -> Analysis:
    """One look at an experiment: per-metric comparisons of every variant with control, the
    SRM check and the verdict. Precedence: Invalid (SRM), Rollback (a guardrail harmed beyond
    its margin), ShipVariant, Inconclusive (a limit reached), Running. No Rollback or
    ShipVariant before every arm compared has min_units_per_variant units."""
    by_name = {v.name: v for v in variants}
    if control not in by_name:
        raise ValueError(f"control {control!r} is not one of the variants")
    ctrl = by_name[control]
    others = [v for v in variants if v.name != control]
    total = sum(v.units for v in variants)
    if settings.tuning_units is not None:
        tuning_total = float(settings.tuning_units)
    elif settings.max_units is not None:
        tuning_total = float(settings.max_units)
    else:
        tuning_total = float(DEFAULT_TUNING_UNITS)

    results: list[MetricResult] = []
    for v in others:
        if settings.tuning_units is None and settings.max_units is not None:
            pair = max(tuning_total * (v.expected_share + ctrl.expected_share), 2.0)
        else:
            pair = tuning_total
        rho = mixture_rho(settings.alpha, pair)
        results.append(_compare(primary, "primary", v, ctrl, rho, settings))
        for g in guardrails:
            results.append(_compare(g, "guardrail", v, ctrl, rho, settings))

    srm = _srm(variants, settings, tuning_total)
    at_limit = (settings.max_units is not None and total >= settings.max_units) or (
        settings.max_duration_s is not None and elapsed_s >= settings.max_duration_s
    )
    verdict = _decide(results, srm, ctrl, others, primary, settings, at_limit)
    return Analysis(results=tuple(results), srm=srm, verdict=verdict, total_units=total)


def _decide(
    results: Sequence[MetricResult],
    srm: SrmResult,
    ctrl: VariantData,
    others: Sequence[VariantData],
    primary: MetricSpec,
    settings: AnalysisSettings,
    at_limit: bool,
) -> Verdict:
    if srm.detected:
        return Verdict(
            "Invalid",
            None,
            f"sample ratio mismatch: units per variant differ from the weights "
            f"(chi-square p={srm.p_value:.3g}, sequential p={srm.sequential_p_value:.3g} "
            f"< {settings.srm_alpha:g}); assignment or logging is broken, figures not trusted",
        )
    min_units = settings.min_units_per_variant
    ready = ctrl.units >= min_units and all(v.units >= min_units for v in others)
    if not ready:
        if at_limit:
            return Verdict(
                "Inconclusive", None, f"limit reached before {min_units} units in every variant"
            )
        return Verdict("Running", None, f"waiting for {min_units} units in every variant")

    breached = [r for r in results if r.breached]
    if breached:
        r = breached[0]
        return Verdict(
            "Rollback",
            ctrl.name,
            f"guardrail {r.metric} of {r.variant} worse than its margin: delta "
            f"{_fmt(r.delta)}, interval [{_fmt(r.interval_low)}, {_fmt(r.interval_high)}]",
        )

    sign = 1.0 if primary.direction == "increase" else -1.0
    winners: list[MetricResult] = []
    for v in others:
        mine = [r for r in results if r.variant == v.name]
        main = next(r for r in mine if r.role == "primary")
        if main.call == "Better" and all(r.non_inferior for r in mine if r.role == "guardrail"):
            winners.append(main)
    if winners:
        best = max(winners, key=lambda r: sign * (r.delta or 0.0))
        return Verdict(
            "ShipVariant",
            best.variant,
            f"{primary.name} better: delta {_fmt(best.delta)}, lift {_fmt(best.lift)}, "
            f"always-valid p={_fmt(best.p_value)}; every guardrail within its margin",
        )
    if at_limit:
        return Verdict("Inconclusive", None, "limit reached without a decision")
    return Verdict("Running", None, "no variant is decided yet")
