"""Probability of target attainment per regimen, and metric summaries.

A target is a condition on per-subject metrics of a simulation::

    target := condition (("and" | "&") condition)*
    condition := METRIC (">=" | ">" | "<=" | "<") NUMBER

e.g. ``"s6k_inhibition_trough_ss >= 80"`` (a PD target), ``"auc_tau_sirolimus_ss <= 3000"``
(an exposure ceiling: the probability of staying below it), or both joined by ``and`` (a
subject attains the target when every condition holds). Numbers are in the metric's units
(the ``units`` attribute of its variable).

For each regimen and posterior draw, the attainment is the fraction of virtual subjects that
meet the target (subjects with a missing metric, e.g. a failed solve, are left out); across
draws this gives the posterior median and a credible interval.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from pkpd.simulate.errors import SimulationError

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_COND = re.compile(
    r"^\s*([A-Za-z_][\w]*)\s*(>=|<=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)


def metric_names(sim: xr.Dataset) -> list[str]:
    """Per-subject metric variables of a simulation (dims regimen, draw, subject)."""
    return [
        k
        for k, v in sim.data_vars.items()
        if v.dims == ("regimen", "draw", "subject") and k != "solve_ok"
    ]


def parse_target(text: str, available: Sequence[str]) -> list[tuple[str, str, float]]:
    """``"a >= 80 and b <= 5"`` → ``[("a", ">=", 80.0), ("b", "<=", 5.0)]``.

    Raises
    ------
    SimulationError
        For text that is not a target, or a metric the simulation does not have (the message
        lists those it has).
    """
    if not isinstance(text, str) or not text.strip():
        raise SimulationError(f"target {text!r}: expected e.g. 's6k_inhibition_trough_ss >= 80'")
    out = []
    for part in re.split(r"\s+and\s+|&", text.strip(), flags=re.IGNORECASE):
        m = _COND.match(part)
        if not m:
            raise SimulationError(
                f"target {text!r}: cannot read {part.strip()!r}; expected METRIC OP NUMBER with "
                "OP one of >=, >, <=, < (e.g. 's6k_inhibition_trough_ss >= 80'); join "
                "conditions with 'and'"
            )
        name, op, value = m.group(1), m.group(2), float(m.group(3))
        if name not in available:
            raise SimulationError(
                f"target {text!r}: the simulation has no metric {name!r}; it has "
                f"{', '.join(available)}"
            )
        out.append((name, op, value))
    return out


def _as_dataset(sim):
    if isinstance(sim, xr.Dataset):
        return sim
    from pkpd.simulate.io import load_simulation

    return load_simulation(sim)


def attainment(sim, targets, *, ci: float = 0.9) -> pd.DataFrame:
    """Probability of target attainment per regimen, ranked (see the module docstring).

    Parameters
    ----------
    sim : xarray.Dataset or path
        A result of :func:`pkpd.simulate` (or its netCDF file).
    targets : str or sequence of str
        Target conditions, e.g. ``"s6k_inhibition_trough_ss >= 80"``.
    ci : float
        Mass of the credible interval over posterior draws (default 0.9: 5th-95th percentile).

    Returns
    -------
    pandas.DataFrame
        One row per target and regimen, sorted by target then rank: ``target``, ``rank`` (1 =
        the highest median probability; ties broken by the mean), ``regimen``,
        ``regimen_text``, ``probability`` (posterior median of the fraction of subjects meeting
        the target, 0-1), ``ci_low``, ``ci_high``, ``mean``, ``n_draws``, ``n_subjects``.

    Examples
    --------
    >>> table = attainment(sim, "s6k_inhibition_trough_ss >= 80")   # doctest: +SKIP
    """
    sim = _as_dataset(sim)
    if not 0 < ci < 1:
        raise SimulationError(f"ci={ci!r}; expected a number between 0 and 1, e.g. 0.9")
    targets = [targets] if isinstance(targets, str) else list(targets)
    available = metric_names(sim)
    lo_q, hi_q = (1 - ci) / 2, (1 + ci) / 2
    rows = []
    labels = [str(r) for r in sim["regimen"].values]
    texts = [str(t) for t in sim["regimen_text"].values] if "regimen_text" in sim else labels
    for target in targets:
        conds = parse_target(target, available)
        ok = None
        finite = None
        for name, op, value in conds:
            v = sim[name].transpose("regimen", "draw", "subject").values
            hit = _OPS[op](v, value)
            ok = hit if ok is None else ok & hit
            fin = np.isfinite(v)
            finite = fin if finite is None else finite & fin
        n_ok = np.sum(ok & finite, axis=2)
        n_fin = np.sum(finite, axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(n_fin > 0, n_ok / np.maximum(n_fin, 1), np.nan)  # [R, draw]
        part = []
        for r, label in enumerate(labels):
            f = frac[r][np.isfinite(frac[r])]
            part.append(
                {
                    "target": target,
                    "regimen": label,
                    "regimen_text": texts[r],
                    "probability": float(np.median(f)) if f.size else np.nan,
                    "ci_low": float(np.quantile(f, lo_q)) if f.size else np.nan,
                    "ci_high": float(np.quantile(f, hi_q)) if f.size else np.nan,
                    "mean": float(np.mean(f)) if f.size else np.nan,
                    "n_draws": int(f.size),
                    "n_subjects": int(sim.sizes["subject"]),
                }
            )
        df = pd.DataFrame(part).sort_values(
            ["probability", "mean"], ascending=False, na_position="last", kind="stable"
        )
        df.insert(1, "rank", np.arange(1, len(df) + 1))
        rows.append(df)
    cols = [
        "target",
        "rank",
        "regimen",
        "regimen_text",
        "probability",
        "ci_low",
        "ci_high",
        "mean",
        "n_draws",
        "n_subjects",
    ]
    return pd.concat(rows, ignore_index=True)[cols]


def summarize(sim, *, ci: float = 0.9) -> pd.DataFrame:
    """Every metric per regimen: median and ``ci`` interval over draws and subjects pooled.

    The pooled distribution is the posterior predictive distribution of a new subject's
    metric (parameter uncertainty and between-subject variability together).

    Returns
    -------
    pandas.DataFrame
        ``regimen``, ``metric``, ``units``, ``median``, ``low``, ``high``, ``mean``, ``n``
        (finite values), ``long_name``.
    """
    sim = _as_dataset(sim)
    lo_q, hi_q = (1 - ci) / 2, (1 + ci) / 2
    rows = []
    for r, label in enumerate(sim["regimen"].values):
        for m in metric_names(sim):
            v = sim[m].transpose("regimen", "draw", "subject").values[r].ravel()
            v = v[np.isfinite(v)]
            rows.append(
                {
                    "regimen": str(label),
                    "metric": m,
                    "units": sim[m].attrs.get("units", ""),
                    "median": float(np.median(v)) if v.size else np.nan,
                    "low": float(np.quantile(v, lo_q)) if v.size else np.nan,
                    "high": float(np.quantile(v, hi_q)) if v.size else np.nan,
                    "mean": float(np.mean(v)) if v.size else np.nan,
                    "n": int(v.size),
                    "long_name": sim[m].attrs.get("long_name", ""),
                }
            )
    return pd.DataFrame(rows)


def format_attainment(table: pd.DataFrame) -> str:
    """The attainment table as aligned text (percentages), one block per target."""
    lines = []
    for target, df in table.groupby("target", sort=False):
        lines.append(f"target: {target}")
        w = max(len("regimen"), *(len(str(r)) for r in df["regimen"]))
        lines.append(f"  {'rank':>4}  {'regimen':<{w}}  {'P(attain)':>9}  90% CrI")
        for _, row in df.iterrows():
            lines.append(
                f"  {row['rank']:>4}  {row['regimen']:<{w}}  {100 * row['probability']:8.1f}%"
                f"  [{100 * row['ci_low']:.1f}%, {100 * row['ci_high']:.1f}%]"
            )
    return "\n".join(lines)
