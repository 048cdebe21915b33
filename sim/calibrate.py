"""Calibration: fit a provider model's parameters to recorded outcomes.

Owns the fitted parameters (``PARAMS``: greylist delay, rate-limit threshold and throttle
window, complaint delay median and spread), the distance between recorded and simulated
traffic (``features`` / ``distance``), the fit (``calibrate``), held-out goodness of fit and
the calibrated model file (``write_model``, same format as ``fixtures/models/*.toml`` but
self-contained: the merged generic + provider + fitted values, so it loads from anywhere).

The objective plays the recorded send schedule through the real provider model
(``sim.calib_driver.drive``) with one fixed seed for every evaluation (common random
numbers) and compares:
- ``tta``: Wasserstein distance of time-to-accept, over the recorded mean time-to-accept;
- ``rate``: rate-deferral probability per bin of send rate (attempts from the same IP in
  the trailing minute), absolute error weighted by the bin's share;
- ``greylist``: greylist-deferral probability per bin of a message's age since its first
  attempt, likewise;
- ``complaint``: Wasserstein distance of log complaint delays (after acceptance).
Parameters are fitted block by block (greylist, then rate threshold + window, then
complaint delay), each block with scipy.optimize on its own terms with the others held:
differential evolution (fixed seed, bounded generations) in log space for the
step-shaped blocks, Nelder-Mead for the smooth complaint block.

The models' rate limits are hard thresholds: above the limit in the window a message is
deferred with probability 1; the per-bin deferral probabilities are what the fit compares.
Must not touch the warehouse (callers hand in frames), the world or ``fixtures/models``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, stats

from engine.errors import InputError
from sim.calib_data import GREYLIST, RATE, Recording, split
from sim.calib_driver import Played, drive
from sim.calib_toml import dumps
from sim.providers import ModelParams
from sim.providers.params import deep_merge, model_path, read_toml

RATE_PROBE_S = 60.0  # the send-rate covariate: attempts from one IP in the trailing minute
MIN_COMPLAINTS = 20


# ------------------------------------------------------------------ fitted parameters
@dataclass(frozen=True, slots=True)
class FitParam:
    """One fitted number: how to read it from and write it into ``ModelParams`` / TOML."""

    name: str
    key: str  # dotted key in the model file
    get: Callable[[ModelParams], float]
    put: Callable[[ModelParams, float], ModelParams]
    integer: bool = False


def _tier0(p: ModelParams) -> int:
    lo, hi = p.rep_tiers
    return 0 if p.rep_initial < lo else (2 if p.rep_initial >= hi else 1)


def _put_limit(p: ModelParams, x: float) -> ModelParams:
    """The IP limit at the initial reputation tier set to ``x``; other tiers scaled alike."""
    cur = p.rate_limits["ip"]
    f = x / cur[_tier0(p)]
    limits = dict(p.rate_limits)
    limits["ip"] = tuple(max(1, round(v * f)) for v in cur)  # type: ignore[assignment]
    return replace(p, rate_limits=limits)


PARAMS: dict[str, FitParam] = {
    "greylist_delay_s": FitParam(
        "greylist_delay_s", "greylist.delay_s", lambda p: p.greylist_delay_s,
        lambda p, x: replace(p, greylist_delay_s=float(x))),
    "rate_limit": FitParam(
        "rate_limit", "rates.ip", lambda p: float(p.rate_limits["ip"][_tier0(p)]),
        _put_limit, integer=True),
    "rate_window_s": FitParam(
        "rate_window_s", "rates.window_s", lambda p: p.rate_window_s,
        lambda p, x: replace(p, rate_window_s=float(x))),
    "complaint_delay_median_s": FitParam(
        "complaint_delay_median_s", "feedback.complaint_delay_median_s",
        lambda p: p.complaint_delay_median_s,
        lambda p, x: replace(p, complaint_delay_median_s=float(x))),
    "complaint_delay_sigma": FitParam(
        "complaint_delay_sigma", "feedback.complaint_delay_sigma",
        lambda p: p.complaint_delay_sigma,
        lambda p, x: replace(p, complaint_delay_sigma=float(x))),
}
BLOCKS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    # (block, parameters, distance terms)
    ("greylist", ("greylist_delay_s",), ("greylist", "tta")),
    ("rate", ("rate_limit", "rate_window_s"), ("rate", "tta")),
    ("complaint", ("complaint_delay_median_s", "complaint_delay_sigma"), ("complaint",)),
)
TERMS = ("tta", "rate", "greylist", "complaint")


def values_of(p: ModelParams, names: tuple[str, ...] | None = None) -> dict[str, float]:
    return {n: PARAMS[n].get(p) for n in (names or tuple(PARAMS))}


def with_values(p: ModelParams, values: Mapping[str, float]) -> ModelParams:
    for name, x in values.items():
        p = PARAMS[name].put(p, x)
    return p


# ------------------------------------------------------------------ features and distance
@dataclass(frozen=True, slots=True)
class Features:
    """What the distance compares, from a recording or a simulated replay of it."""

    tta: np.ndarray
    rate_cov: np.ndarray
    rate_def: np.ndarray  # bool per attempt that passed greylisting
    grey_age: np.ndarray
    grey_def: np.ndarray
    complaint_log: np.ndarray


def _trailing(ts: np.ndarray, ip: np.ndarray) -> np.ndarray:
    out = np.zeros(ts.size)
    for k in np.unique(ip):
        idx = np.flatnonzero(ip == k)
        t = ts[idx]
        out[idx] = np.arange(idx.size) - np.searchsorted(t, t - RATE_PROBE_S, side="right") + 1
    return out


def _features(rec: Recording, ts: np.ndarray, msg: np.ndarray, ip: np.ndarray,
              out: np.ndarray, accept: np.ndarray, complaint_delay: np.ndarray) -> Features:
    order = np.lexsort((msg, ts))
    ts, msg, ip, out = ts[order], msg[order], ip[order], out[order]
    first = np.full(rec.n_messages, np.inf)
    np.minimum.at(first, msg, ts)
    tta = np.where(np.isfinite(accept), accept, rec.horizon) - rec.enq
    passed = out != GREYLIST
    cov = _trailing(ts, ip)
    cd = complaint_delay[np.isfinite(complaint_delay) & (complaint_delay > 0)]
    return Features(tta=tta, rate_cov=cov[passed], rate_def=(out == RATE)[passed],
                    grey_age=ts - first[msg], grey_def=out == GREYLIST,
                    complaint_log=np.log(cd))


def recorded_features(rec: Recording) -> Features:
    ip_codes = {v: k for k, v in enumerate(sorted(set(rec.att_ip)))}
    ip = np.array([ip_codes[x] for x in rec.att_ip], dtype=np.int64)
    return _features(rec, rec.att_ts, rec.att_msg, ip, rec.att_out, rec.accept_ts(),
                     rec.complaint_delay)


def played_features(rec: Recording, played: Played) -> Features:
    cd = played.complaint_ts - played.accept_ts
    return _features(rec, played.att_ts, played.att_msg, played.att_ip, played.att_out,
                     played.accept_ts, cd)


def _binned_error(cov_a: np.ndarray, y_a: np.ndarray, cov_b: np.ndarray, y_b: np.ndarray,
                  nbins: int = 10) -> float:
    """Sum over bins (quantiles of ``cov_b``, the recording) of share * |rate_a - rate_b|."""
    if cov_b.size == 0:
        return 0.0
    edges = np.unique(np.quantile(cov_b, np.linspace(0, 1, nbins + 1))[1:-1])
    ba, bb = np.digitize(cov_a, edges), np.digitize(cov_b, edges)
    k = edges.size + 1
    na, nb = np.bincount(ba, minlength=k), np.bincount(bb, minlength=k)
    ra = np.bincount(ba, weights=y_a.astype(float), minlength=k) / np.maximum(na, 1)
    rb = np.bincount(bb, weights=y_b.astype(float), minlength=k) / np.maximum(nb, 1)
    return float(np.sum(nb / nb.sum() * np.abs(ra - rb)))


def distance(sim: Features, rec: Features, terms: tuple[str, ...] = TERMS) -> dict[str, float]:
    """Per term the distance of ``sim`` from ``rec`` (0 = identical); ``total`` sums them."""
    d: dict[str, float] = {}
    if "tta" in terms:
        d["tta"] = float(stats.wasserstein_distance(sim.tta, rec.tta)
                         / (float(np.mean(rec.tta)) + 1.0))
    if "rate" in terms:
        d["rate"] = _binned_error(sim.rate_cov, sim.rate_def, rec.rate_cov, rec.rate_def)
    if "greylist" in terms:
        d["greylist"] = _binned_error(sim.grey_age, sim.grey_def, rec.grey_age, rec.grey_def)
    if "complaint" in terms and rec.complaint_log.size:
        d["complaint"] = (float(stats.wasserstein_distance(sim.complaint_log, rec.complaint_log))
                          if sim.complaint_log.size else 10.0)
    d["total"] = float(sum(d.values()))
    return d


# ------------------------------------------------------------------ the fit
@dataclass(slots=True)
class Calibration:
    """A finished fit: start and fitted values, fit and held-out distances, cost."""

    provider: str
    start: ModelParams
    fitted: ModelParams
    names: tuple[str, ...]
    fit_distance: dict[str, float]
    holdout: str | None = None
    holdout_distance: dict[str, float] = field(default_factory=dict)
    baseline_distance: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0
    seconds: float = 0.0
    n_messages: int = 0
    n_attempts: int = 0

    def values(self) -> dict[str, float]:
        return values_of(self.fitted, self.names)

    def start_values(self) -> dict[str, float]:
        return values_of(self.start, self.names)


def active_blocks(rec: Recording, start: ModelParams,
                  only: tuple[str, ...] | None = None) -> list[tuple[str, tuple[str, ...],
                                                                  tuple[str, ...]]]:
    """The blocks the recording can inform (greylisting seen, rate deferrals seen, enough
    complaints), restricted to the parameter names in ``only``."""
    out = []
    for block, names, terms in BLOCKS:
        if only is not None:
            names = tuple(n for n in names if n in only)
        if not names:
            continue
        if block == "greylist" and not (start.greylist_enabled and (rec.att_out == GREYLIST).any()):
            continue
        if block == "rate" and not (rec.att_out == RATE).any():
            continue
        if block == "complaint" and np.isfinite(rec.complaint_delay).sum() < MIN_COMPLAINTS:
            continue
        out.append((block, names, terms))
    return out


def calibrate(rec: Recording, start: ModelParams, *, seed: int = 7, maxiter: int = 8,
              popsize: int = 5, only: tuple[str, ...] | None = None,
              ip_age_days: float = 365.0) -> Calibration:
    """Fit ``start``'s parameters to ``rec`` (see the module docstring); deterministic.

    Raises ``InputError`` when the recording shows nothing to fit."""
    t0 = time.perf_counter()
    target = recorded_features(rec)
    blocks = active_blocks(rec, start, only)
    if not blocks:
        raise InputError(f"nothing to calibrate for {rec.provider}: the recording shows no "
                         "greylisting, no rate deferrals and too few complaints")
    current = start
    evals = 0

    def score(p: ModelParams, terms: tuple[str, ...]) -> float:
        nonlocal evals
        evals += 1
        played = drive(rec, p, seed, ip_age_days=ip_age_days)
        return distance(played_features(rec, played), target, terms)["total"]

    for block, names, terms in blocks:
        base = current
        x0 = np.array([PARAMS[n].get(base) for n in names])

        def objective(z: np.ndarray, base: ModelParams = base, names: tuple[str, ...] = names,
                      x0: np.ndarray = x0, terms: tuple[str, ...] = terms) -> float:
            return score(with_values(base, dict(zip(names, x0 * np.exp(z), strict=True))),
                         terms)

        if block == "complaint":
            res = optimize.minimize(objective, np.zeros(len(names)), method="Nelder-Mead",
                                    options={"maxfev": 15 * maxiter, "xatol": 0.01,
                                             "fatol": 1e-4, "initial_simplex": _simplex(
                                                 len(names), 0.4)})
        else:
            res = optimize.differential_evolution(
                objective, [(math.log(1 / 3), math.log(3))] * len(names), seed=seed,
                maxiter=maxiter, popsize=popsize, tol=0.0, polish=False, init="sobol",
                updating="immediate")
        current = with_values(base, dict(zip(names, x0 * np.exp(res.x), strict=True)))
    names_all = tuple(n for _, ns, _ in blocks for n in ns)
    fit_played = drive(rec, current, seed, ip_age_days=ip_age_days)
    fit_d = distance(played_features(rec, fit_played), target)
    return Calibration(provider=rec.provider, start=start, fitted=current, names=names_all,
                       fit_distance=fit_d, evaluations=evals + 1,
                       seconds=time.perf_counter() - t0, n_messages=rec.n_messages,
                       n_attempts=rec.n_attempts)


def _simplex(n: int, step: float) -> np.ndarray:
    return np.vstack([np.zeros(n), *[np.eye(n)[i] * step for i in range(n)]])


def evaluate(rec: Recording, params: ModelParams, *, seed: int = 7,
             ip_age_days: float = 365.0) -> dict[str, float]:
    """The distance of ``params``' replay of ``rec`` from ``rec`` (every term)."""
    played = drive(rec, params, seed, ip_age_days=ip_age_days)
    return distance(played_features(rec, played), recorded_features(rec))


def calibrate_holdout(rec: Recording, start: ModelParams, holdout: str | None, *,
                      seed: int = 7, maxiter: int = 8, only: tuple[str, ...] | None = None,
                      ip_age_days: float = 365.0) -> Calibration:
    """Fit on part of ``rec`` and score the fit and the start model on the held-out part
    (``holdout`` "day" or "ip"; None fits on everything and scores nothing held out)."""
    if holdout is None:
        return calibrate(rec, start, seed=seed, maxiter=maxiter, only=only,
                         ip_age_days=ip_age_days)
    fit_part, held = split(rec, holdout)
    if fit_part.n_attempts == 0 or held.n_attempts == 0:
        raise InputError(f"--holdout {holdout} leaves one side without traffic")
    cal = calibrate(fit_part, start, seed=seed, maxiter=maxiter, only=only,
                    ip_age_days=ip_age_days)
    cal.holdout = holdout
    cal.holdout_distance = evaluate(held, cal.fitted, seed=seed, ip_age_days=ip_age_days)
    cal.baseline_distance = evaluate(held, start, seed=seed, ip_age_days=ip_age_days)
    return cal


# ------------------------------------------------------------------ output
def render(cal: Calibration, truth: Mapping[str, float] | None = None) -> str:
    """A small table: parameter, start, fitted, true (when known), then the distances."""
    rows = [("parameter", "start", "fitted", "true", "error")]
    for n in cal.names:
        s, f = PARAMS[n].get(cal.start), PARAMS[n].get(cal.fitted)
        t = truth.get(n) if truth else None
        rows.append((n, f"{s:g}", f"{f:.4g}", "" if t is None else f"{t:g}",
                     "" if not t else f"{(f - t) / t:+.1%}"))
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    lines.append("")
    lines.append(f"fit on {cal.n_messages} messages / {cal.n_attempts} attempts: distance "
                 + _fmt(cal.fit_distance) + f"  ({cal.evaluations} evaluations, "
                 f"{cal.seconds:.1f} s)")
    if cal.holdout:
        lines.append(f"held out by {cal.holdout}: calibrated {_fmt(cal.holdout_distance)}")
        lines.append(f"held out by {cal.holdout}: uncalibrated {_fmt(cal.baseline_distance)}")
    return "\n".join(lines)


def _fmt(d: Mapping[str, float]) -> str:
    parts = [f"{k} {v:.4f}" for k, v in d.items() if k != "total"]
    return f"{d.get('total', 0.0):.4f} (" + ", ".join(parts) + ")"


def model_dict(provider_or_path: str | Path, fitted: ModelParams,
               names: tuple[str, ...]) -> dict[str, Any]:
    """The merged raw model mapping (generic + provider file) with the fitted values set."""
    path = Path(provider_or_path)
    if path.suffix != ".toml":
        path = model_path(str(provider_or_path))
    base = path.with_name("generic.toml")
    raw = read_toml(base) if base.exists() else {}
    if path.resolve() != base.resolve():
        raw = deep_merge(raw, read_toml(path))
    for n in names:
        fp = PARAMS[n]
        section, key = fp.key.split(".")
        value: Any = fp.get(fitted)
        if n == "rate_limit":
            value = [int(v) for v in fitted.rate_limits["ip"]]
        elif fp.integer:
            value = round(value)
        else:
            value = round(float(value), 3)
        raw.setdefault(section, {})[key] = value
    return raw


def write_model(cal: Calibration, out: Path, model: str | Path, source: str) -> None:
    """Write the calibrated model file with a header saying what it was fitted on."""
    header = (f"Calibrated model of {cal.provider}, written by `inboxlab sim calibrate`.\n"
              f"Fitted on: {source} ({cal.n_messages} messages, {cal.n_attempts} attempts).\n"
              f"Fitted parameters: " + ", ".join(
                  f"{n} = {PARAMS[n].get(cal.fitted):.4g} (start "
                  f"{PARAMS[n].get(cal.start):g})" for n in cal.names) + "\n"
              f"Fit distance: {_fmt(cal.fit_distance)}\n")
    if cal.holdout:
        header += (f"Held out by {cal.holdout}: calibrated {_fmt(cal.holdout_distance)};"
                   f" uncalibrated {_fmt(cal.baseline_distance)}\n")
    header += ("Self-contained: generic.toml and the provider file merged, fitted values set.\n")
    raw = model_dict(model, cal.fitted, cal.names)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(dumps(raw, header))
    tmp.replace(out)
