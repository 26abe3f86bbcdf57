"""The report's content: sections of text, tables and figures from :mod:`pkpd.diagnostics`.

:func:`build_sections` calls the same diagnostics functions the notebooks call and returns
plain objects (DataFrames, matplotlib Figures, strings), so the HTML report and a notebook show
the same numbers from one code path; :func:`render` turns them into one self-contained HTML
document.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pkpd.report import html as H


@dataclass
class Block:
    """One item of a section: ``kind`` is text, note, warning, error, table, figure or pre."""

    kind: str
    content: object
    caption: str = ""


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, kind: str, content, caption: str = "") -> None:
        self.blocks.append(Block(kind, content, caption))


class _Builder:
    def __init__(self, strict: bool, progress: Callable[[str], None] | None):
        self.strict = strict
        self.progress = progress or (lambda msg: None)
        self.errors: list[str] = []

    def attempt(self, section: Section, what: str, fn, kind: str | None, caption: str = ""):
        """Add ``fn()`` to the section (``kind=None``: only return it); a failure becomes an
        error block (or raises if strict)."""
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - one failed figure must not lose the report
            if self.strict:
                raise
            msg = f"{what} could not be produced: {type(e).__name__}: {e}"
            self.errors.append(msg)
            section.add("error", msg)
            section.add("pre", traceback.format_exc(limit=4))
            return None
        if out is not None and kind is not None:
            section.add(kind, out, caption)
        return out


def _display_parameters(tab: pd.DataFrame) -> pd.DataFrame:
    """The parameter table as shown: the CV and its interval in one column."""
    out = tab.copy()
    lo = [c for c in out.columns if c.startswith("cv_q")]
    if len(lo) == 2:

        def cv(r):
            if pd.isna(r["cv_percent"]):
                return ""
            return f"{r['cv_percent']:.3g} ({r[lo[0]]:.3g}-{r[lo[1]]:.3g})"

        out.insert(list(out.columns).index("cv_percent"), "CV % (interval)", out.apply(cv, axis=1))
        out = out.drop(columns=["cv_percent", *lo])
    return out


def _fit_meta(idata) -> list[tuple[str, object]]:
    a = idata.attrs
    post = idata.posterior
    method = a.get("method", "")
    sampling = (
        f"NUTS, {a.get('chains', post.sizes['chain'])} chains x {a.get('warmup', '?')} warm-up + "
        f"{a.get('draws', post.sizes['draw'])} draws"
        if method == "nuts"
        else f"{method}: posterior mode + Laplace approximation, {post.sizes['draw']} draws"
    )
    eff = [e["name"] for e in json.loads(a.get("covariate_effects_detail", "[]"))]
    aggregate = []
    if a.get("aggregate_rows"):
        rows = json.loads(a["aggregate_rows"])
        arms = len({(r["study"], r["arm"]) for r in rows})
        aggregate = [
            ("aggregate data", f"{a.get('aggregate_source', '')}: {len(rows)} published summaries "
             f"of {arms} arms, {a.get('aggregate_virtual', '')} virtual subjects per arm"),
            ("studies of the aggregate data only", ", ".join(json.loads(a.get("aggregate_studies", "[]"))) or "none"),
        ]  # fmt: skip
    return [
        ("model", a.get("model", "")),
        ("endpoints fitted", ", ".join(json.loads(a.get("endpoints", "[]")))),
        ("endpoints in the data, not fitted", ", ".join(json.loads(a.get("endpoints_not_fitted", "[]"))) or "none"),
        ("method", sampling),
        ("seed", a.get("seed", "")),
        ("subjects", post.sizes.get("subject", "")),
        ("studies", ", ".join(dict.fromkeys(str(s) for s in idata.constant_data["subject_study"].values))),
        ("observations", idata.observed_data.sizes.get("obs", "")),
        ("data file", a.get("data_source", "") if a.get("data_source", "") not in ("", "None") else "(a DataFrame)"),
        ("data SHA-256", a.get("data_sha256", "")),
        *aggregate,
        ("priors", a.get("priors_source", "")),
        ("covariate effects", ", ".join(eff) or "none"),
        ("covariate effects not used", ", ".join(json.loads(a.get("dropped_covariate_effects", "[]"))) or "none"),
        ("fitted", a.get("created", "")),
        ("pkpd version", a.get("pkpd_version", "")),
    ]  # fmt: skip


def build_sections(
    fit,
    sim=None,
    *,
    n_replicates: int = 200,
    seed: int = 0,
    targets=None,
    vpc_x: str = "auto",
    strict: bool = False,
    progress: Callable[[str], None] | None = None,
    ppc=None,
) -> list[Section]:
    """Every table and figure of the report, as :class:`Section` objects.

    Parameters
    ----------
    fit : arviz.InferenceData or path
    sim : xarray.Dataset, path or None
        A simulation from :func:`pkpd.simulate`; ``None`` leaves the simulation section out
        (it then says so).
    n_replicates : int
        Replicates of the trial for VPCs and NPDE.
    seed : int
        Seed of the replicates.
    targets : sequence of str, optional
        Target-attainment criteria such as ``"s6k_inhibition_trough_ss >= 80"`` (default: the
        simulation's ``targets`` attribute if any, else S6K inhibition at steady-state trough
        >= 80% where the simulation has it, as ``pkpd simulate``).
    vpc_x : {"auto", "time", "tad"}
        Time axis of VPCs and NPDE-vs-time plots; ``"auto"``: per endpoint, time after dose
        where it explains the observations better than time (weekly dosing), else time.
    strict : bool
        Raise on the first failing item instead of reporting it in the document.
    progress : callable, optional
        Called with a short message before each expensive step.
    ppc : xarray.Dataset, optional
        Precomputed :func:`~pkpd.diagnostics.posterior_predictive` of the fit.
    """
    from pkpd import diagnostics as dx
    from pkpd.diagnostics._common import as_fit, fit_endpoints

    idata = as_fit(fit)
    b = _Builder(strict, progress)
    sections: list[Section] = []
    endpoints = fit_endpoints(idata)

    s = Section("summary", "Fit summary")
    s.add("table_kv", _fit_meta(idata))
    sections.append(s)

    s = Section("data", "Data")
    b.attempt(s, "data table", lambda: dx.data_table(idata), "table",
              "Subjects, observations and observations below the LLOQ (censored, M3) by study "
              "and endpoint")  # fmt: skip
    sections.append(s)

    s = Section("parameters", "Parameter estimates")
    b.progress("parameter table")
    b.attempt(s, "parameter table", lambda: _display_parameters(dx.parameter_table(idata)), "table",
              "Posterior median and 90% credible interval (q5, q95). Between-subject and "
              "between-study SDs are on the log (or logit) scale; cv_percent = "
              "100·sqrt(exp(ω²) − 1) for log-normal parameters; shrinkage_percent = "
              "100·(1 − SD(posterior mean η)/ω).")  # fmt: skip
    effects = json.loads(idata.attrs.get("covariate_effects_detail", "[]"))
    if effects:
        rows = [
            {
                "effect": e["name"],
                "parameter": e["parameter"],
                "covariate": e["covariate"],
                "form": e["form"],
                "reference": e.get("reference"),
                "prior": json.dumps(e["prior"]),
            }
            for e in effects
        ]
        s.add("table", pd.DataFrame(rows).set_index("effect"), "Covariate effects")
    sections.append(s)

    s = Section("convergence", "Convergence")
    msgs = b.attempt(s, "convergence verdict", lambda: dx.convergence_messages(idata), None)
    if msgs is not None:
        if msgs:
            for m in msgs:
                s.add("warning", m)
        else:
            s.add("note", "R-hat <= 1.01, bulk and tail ESS >= 400, no divergent transitions.")
    b.attempt(s, "convergence table", lambda: dx.convergence_table(idata), "table",
              "R-hat (rank-normalised, split), bulk and tail effective sample sizes, Monte Carlo "
              "SE of the median")  # fmt: skip
    st = dx.sampler_table(idata)
    if len(st):
        s.add("table", st, "Sampler statistics per chain")
    sections.append(s)

    gof_s = Section("gof", "Goodness of fit")
    observed = bool(idata.observed_data.sizes.get("obs", 0))  # none: published summaries alone
    if not observed:
        gof_s.add("note", "No individual data: the fit is of published summaries alone (see "
                  "Published summaries); there are no observations to check.")  # fmt: skip
    elif ppc is None:
        b.progress(f"simulating {n_replicates} replicates of the trial (VPC, NPDE)")
        ppc = b.attempt(
            gof_s,
            "replicates of the trial",
            lambda: dx.posterior_predictive(idata, n_replicates=n_replicates, seed=seed),
            None,
        )
    if observed and ppc is not None:
        gof_s.add("text", f"PRED: population prediction (subject and study effects 0), IPRED: "
                  f"individual prediction, both posterior medians over {ppc.attrs['n_draws']} "
                  f"draws. NPDE from {ppc.sizes['replicate']} replicates of the trial with new "
                  "subjects (decorrelated per subject and endpoint; BLQ observations imputed); "
                  "under the model they are independent N(0, 1).")  # fmt: skip
        b.attempt(gof_s, "NPDE tests", lambda: dx.npde_summary(idata, ppc=ppc), "table",
                  "NPDE against N(0, 1): t-test of the mean, Fisher test of the variance, "
                  "Shapiro-Wilk test of normality")  # fmt: skip
        for ep in endpoints:
            b.progress(f"goodness of fit: {ep}")
            b.attempt(gof_s, f"goodness-of-fit plot of {ep}",
                      lambda ep=ep: dx.gof(idata, ep, x=vpc_x, ppc=ppc), "figure",
                      f"Goodness of fit, {ep}")  # fmt: skip
            b.attempt(gof_s, f"individual fits of {ep}",
                      lambda ep=ep: dx.individual_fits(idata, ep, ppc=ppc), "figure",
                      f"Individual fits, {ep} (a few subjects per study)")  # fmt: skip
    sections.append(gof_s)

    v = Section("vpc", "Visual predictive checks")
    if not observed:
        v.add("note", "No individual data: no visual predictive checks.")
    elif ppc is not None:
        v.add("text", "Observed percentiles (lines) against the 90% interval of the same "
              "percentiles over replicates (bands), per study. Percentiles decided by "
              "observations below the LLOQ are not drawn; the lower panels compare the fraction "
              "below the LLOQ. Prediction-corrected VPCs normalise each value by its population "
              "prediction. Time axis: time after the latest dose where it explains the "
              "observations better than time since the first dose (repeated dosing), else "
              "time.")  # fmt: skip
        cov_rows = []
        for ep in endpoints:
            b.progress(f"VPC: {ep}")
            for pc in (False, True):
                kind = "pcVPC" if pc else "VPC"
                b.attempt(v, f"{kind} of {ep}",
                          lambda ep=ep, pc=pc: dx.vpc(idata, ep, prediction_corrected=pc,
                                                      x=vpc_x, ppc=ppc),
                          "figure", f"{kind}, {ep}")  # fmt: skip
            try:
                tab = dx.vpc_table(idata, ep, x=vpc_x, ppc=ppc)
                cov_rows.append({"endpoint": ep, "observations": int(tab["n_obs"].sum()),
                                 "inside 5-95% band": dx.vpc_coverage(tab),
                                 "BLQ observed": float((tab["blq_obs"] * tab["n_obs"]).sum()
                                                       / max(tab["n_obs"].sum(), 1))})  # fmt: skip
            except Exception as e:  # noqa: BLE001
                if strict:
                    raise
                b.errors.append(f"VPC table of {ep}: {e}")
        if cov_rows:
            v.add("table", pd.DataFrame(cov_rows).set_index("endpoint"),
                  "Fraction of observations inside the median simulated 5-95% band (about 0.9 "
                  "when the model describes the data), all studies")  # fmt: skip
    else:
        v.add("warning", "No replicates of the trial: see the error under Goodness of fit.")
    sections.append(v)

    if "aggregate_mu" in idata.posterior:
        a = Section("aggregate", "Published summaries")
        a.add("text", "Each published arm-level summary fitted with the data, beside the 90% "
              "posterior predictive interval of the statistic a trial of the arm's size would "
              "report (tail: predictive probability below the published value; near 0 or 1, "
              "the model does not reproduce that publication). mc_ratio: Monte Carlo SE of the "
              "prediction over the summary's own SE (virtual subjects per arm: "
              f"{idata.attrs.get('aggregate_virtual', '')}).")  # fmt: skip
        b.attempt(a, "published summaries table", lambda: dx.aggregate_table(idata, seed=seed),
                  "table", "Published summaries (values in the model's units)")  # fmt: skip
        b.attempt(a, "published summaries plot", lambda: dx.aggregate_plot(idata, seed=seed),
                  "figure", "Published summaries (dots) and 90% predictive intervals (bars)")  # fmt: skip
        sections.append(a)

    p = Section("priors", "Priors and posteriors")
    b.progress("prior vs posterior")
    b.attempt(p, "prior/posterior table", lambda: dx.prior_posterior_table(idata), "table",
              "Prior and posterior median and 90% interval; sd_ratio = posterior SD / prior SD "
              "(near 1: the data say little)")  # fmt: skip
    b.attempt(p, "prior/posterior plot", lambda: dx.prior_posterior(idata), "figure",
              "Prior density (line) and posterior (histogram)")  # fmt: skip
    text = idata.attrs.get("priors_toml", "")
    if text:
        p.add("text", f"Priors file as used ({idata.attrs.get('priors_source', '')}):")
        p.add("pre", text)
    sections.append(p)

    sections.append(_simulation_section(b, sim, targets))
    if b.errors:
        sections[0].blocks.insert(
            0,
            Block("error", f"{len(b.errors)} item(s) of this report could not be produced: "
                  + "; ".join(b.errors)),
        )  # fmt: skip
    return sections


def _simulation_section(b: _Builder, sim, targets) -> Section:
    from pkpd import diagnostics as dx
    from pkpd.diagnostics.simulation import as_simulation, key_metrics, metric_variables

    s = Section("simulation", "Dose simulation and target attainment")
    if sim is None:
        s.add("note", "Simulation section absent: no simulation was given. Simulate regimens "
              "with `pkpd simulate FIT.nc --regimen ... --out SIM.nc` and pass it with "
              "`pkpd report FIT.nc --sim SIM.nc`.")  # fmt: skip
        return s
    sim = b.attempt(s, "simulation file", lambda: as_simulation(sim), None)
    if sim is None:
        return s
    b.progress("simulation plots")
    meta = [(k, v) for k, v in sim.attrs.items() if isinstance(v, str | int | float)]
    regs = [str(r) for r in sim["regimen"].values]
    s.add("table_kv", [("regimens", "; ".join(regs)),
                       ("simulated subjects", sim.sizes.get("subject", "")),
                       ("posterior draws", sim.sizes.get("draw", ""))] + meta)  # fmt: skip
    b.attempt(s, "exposure table",
              lambda: dx.exposure_table(sim, metrics=key_metrics(sim)).drop(columns="long_name"),
              "table",
              "Per-subject metrics by regimen: median and 90% interval (low, high) over draws and "
              "subjects pooled")  # fmt: skip
    b.attempt(s, "time courses", lambda: dx.regimen_profiles(sim), "figure",
              "Simulated time courses by regimen")  # fmt: skip
    b.attempt(s, "exposure by regimen", lambda: dx.exposure_by_regimen(sim), "figure",
              "Exposure and response metrics by regimen")  # fmt: skip
    metrics = metric_variables(sim)
    exposures = [m for m in metrics if m.startswith(("auc", "cmax", "cmin", "ctrough", "cavg"))]
    responses = [m for m in metrics if m not in exposures]
    for resp in responses:
        expo = _matching_exposure(resp, exposures)
        if expo is None:
            continue
        b.attempt(s, f"exposure-response {resp}",
                  lambda e=expo, r=resp: dx.exposure_response(sim, exposure=e, response=r),
                  "figure", f"{resp} against {expo}")  # fmt: skip
    if targets is None:
        raw = sim.attrs.get("targets")
        try:
            targets = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            targets = [raw]
    targets = [targets] if isinstance(targets, str) else list(targets or [])
    if not targets and "s6k_inhibition_trough_ss" in sim:
        targets = ["s6k_inhibition_trough_ss >= 80"]  # the default of `pkpd simulate`
        s.add("note", "No target given: the default target of `pkpd simulate` is shown (S6K "
              "inhibition at steady-state trough >= 80%); choose others with --target.")  # fmt: skip
    if targets:
        b.attempt(s, "attainment table",
                  lambda: dx.attainment_table(sim, targets).set_index(["target", "rank"]),
                  "table", "Probability of reaching each target: fraction of subjects per "
                  "posterior draw, median and 90% interval (ci_low, ci_high) over draws; rank 1 "
                  "= the highest median")  # fmt: skip
        b.attempt(s, "target attainment plot", lambda: dx.target_attainment(sim, targets),
                  "figure", "Target attainment by regimen")  # fmt: skip
    else:
        s.add("note", "No target-attainment criterion was given (e.g. --target "
              "'s6k_inhibition_trough_ss >= 80').")  # fmt: skip
    return s


def _matching_exposure(response: str, exposures: list[str]) -> str | None:
    """The exposure metric that goes with a response metric (same period suffix, AUC first)."""
    if not exposures:
        return None
    suffix = response.rsplit("_", 1)[-1]
    same = [e for e in exposures if e.endswith("_" + suffix)]
    pool = same or exposures
    auc = [e for e in pool if e.startswith("auc")]
    return (auc or pool)[0]


def render(sections: list[Section], *, title: str) -> str:
    """One self-contained HTML document of the sections (figures as base64 PNG)."""
    body = []
    for sec in sections:
        body.append(f'<section id="{H.esc(sec.anchor)}"><h2>{H.esc(sec.title)}</h2>')
        for blk in sec.blocks:
            if blk.kind == "figure":
                png = H.figure_png(blk.content)
                body.append(
                    f"<figure>{H.img_tag(png, blk.caption)}"
                    f"<figcaption>{H.esc(blk.caption)}</figcaption></figure>"
                )
            elif blk.kind == "table":
                body.append(H.table(blk.content, caption=blk.caption or None))
            elif blk.kind == "table_kv":
                body.append(H.key_value_table(blk.content))
            elif blk.kind == "pre":
                body.append(f"<pre>{H.esc(blk.content)}</pre>")
            elif blk.kind in ("note", "warning", "error"):
                body.append(f'<p class="{blk.kind}">{H.esc(blk.content)}</p>')
            else:
                body.append(f"<p>{H.esc(blk.content)}</p>")
        body.append("</section>")
    toc = [(s.anchor, s.title) for s in sections]
    return H.document(title, "\n".join(body), toc)


def report(
    fit,
    sim=None,
    out="REPORT.html",
    *,
    title: str | None = None,
    n_replicates: int = 200,
    seed: int = 0,
    targets=None,
    vpc_x: str = "auto",
    strict: bool = False,
    progress: Callable[[str], None] | None = None,
    ppc=None,
) -> Path:
    """Write one self-contained HTML report of a fit (and optionally a simulation).

    Parameters
    ----------
    fit : arviz.InferenceData or path
        A fit from :func:`pkpd.fit` or its netCDF file.
    sim : xarray.Dataset, path or None
        A simulation from :func:`pkpd.simulate` or its file; without one the report says the
        simulation section is absent.
    out : path
        The HTML file to write (written atomically).
    title : str, optional
        Default: "pkpd report: <model>".
    n_replicates, seed, targets, vpc_x, strict, progress, ppc
        See :func:`build_sections`.

    Returns
    -------
    pathlib.Path
        The report file. It needs nothing else to open: figures are embedded PNG, styles
        inline, no network reference; every user-supplied string is HTML-escaped.

    Examples
    --------
    >>> import pkpd
    >>> pkpd.report("fit.nc", sim="sim.nc", out="REPORT.html")   # doctest: +SKIP
    """
    from pkpd.diagnostics._common import as_fit

    idata = as_fit(fit)
    sections = build_sections(
        idata,
        sim,
        n_replicates=n_replicates,
        seed=seed,
        targets=targets,
        vpc_x=vpc_x,
        strict=strict,
        progress=progress,
        ppc=ppc,
    )
    title = title or f"pkpd report: {idata.attrs.get('model', 'fit')}"
    text = render(sections, title=title)
    from pkpd._files import atomic_write

    out = Path(out)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    atomic_write(out, write)
    return out
