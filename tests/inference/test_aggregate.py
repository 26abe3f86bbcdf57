"""Published arm-level summaries in a fit (issue 22): the virtual arms' values against closed
forms, the summaries' likelihood against scipy, and a fit of one study's individual data with
another study's arm summaries against the simulation truth."""

from __future__ import annotations

import io

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

import pkpd
from pkpd.inference import aggregate as A
from pkpd.inference.spec import prepare

from paths import ROOT

CL, V, OMEGA, SHIFT_B = 5.0, 50.0, 0.3, 0.25  # truth: L/h, L, BSV SD, study B's log shift on CL
SAMPLES = (0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0)


def _priors(tmp_path):
    """The bundled one_cmt_iv priors with a between-study SD on clearance."""
    text = (ROOT / "priors" / "one_cmt_iv.toml").read_text()
    marker = 'source = "weakly informative: 95% prior mass 0.1-250 L/h"'
    assert marker in text
    text = text.replace(marker, 'bsv_study = { family = "halfnormal", scale = 0.3 }\n' + marker, 1)
    path = tmp_path / "priors.toml"
    path.write_text(text)
    return path


def _study_a(rng, n=10):
    """Individual data of study A: 100 mg IV bolus, 7 samples, 10% proportional error."""
    rows = []
    for i in range(n):
        cl, v = CL * np.exp(OMEGA * rng.normal()), V * np.exp(OMEGA * rng.normal())
        rows.append(dict(ID=i + 1, STUDY="A", TIME=0.0, EVID=1, AMT=100.0, DV="."))
        for t in SAMPLES:
            c = 100.0 / v * np.exp(-cl / v * t) * 1000.0  # ng/mL
            rows.append(
                dict(ID=i + 1, STUDY="A", TIME=t, EVID=0, AMT=0.0, DV=c * (1 + 0.1 * rng.normal()))
            )
    return pd.DataFrame(rows)


def _study_b_arms(rng, n=12, doses=(100, 300, 1000), shift=SHIFT_B):
    """Study B as published: per single-dose arm, the sample mean (SD) Cmax in mg/L and the
    geometric mean AUC0-inf in ng*h/mL with the SD of its logs, of ``n`` simulated subjects
    whose clearance is ``exp(shift)`` times the population's."""
    out = []
    for dose in doses:
        cl = CL * np.exp(shift + OMEGA * rng.normal(size=n))
        v = V * np.exp(OMEGA * rng.normal(size=n))
        cmax, log_auc = dose / v, np.log(dose / cl * 1000.0)
        common = dict(STUDY="B", ARM=f"{dose} mg", REGIMEN=f"{dose} mg once", N=n, ENDPOINT="conc",
                      SOURCE="synthetic (tests)", HORIZON_H=72.0)  # fmt: skip
        out.append(dict(common, METRIC="cmax", STATISTIC="mean", VALUE=cmax.mean(), SPREAD="sd",
                        SPREAD_VALUE=cmax.std(ddof=1), UNIT="mg/L"))  # fmt: skip
        out.append(dict(common, METRIC="auc_0_inf", STATISTIC="geomean", VALUE=np.exp(log_auc.mean()),
                        SPREAD="sd_log", SPREAD_VALUE=log_auc.std(ddof=1), UNIT="ng*h/mL"))  # fmt: skip
    return pd.DataFrame(out)


ARMS_CLOSED_FORM = """\
STUDY,ARM,REGIMEN,N,ENDPOINT,METRIC,WINDOW,TIME_H,STATISTIC,VALUE,SPREAD,SPREAD_VALUE,UNIT,SOURCE,HORIZON_H
B,inf,100 mg over 2 h once,10,conc,cmax,,,mean,2000,sd,400,ng/mL,s,72
B,inf,100 mg over 2 h once,10,conc,auc_0_inf,,,geomean,20000,cv,30,ng*h/mL,s,72
B,inf,100 mg over 2 h once,10,conc,value,,6,median,1000,,,ng/mL,s,72
B,rep,50 mg q12h x4,8,conc,ctrough,ss,,mean,300,se,50,ng/mL,s,
B,rep,50 mg q12h x4,8,conc,auc_tau,ss,,geomean,9000,,,ng*h/mL,s,
B,rep,50 mg q12h x4,8,conc,cmax,ss,,mean,1500,cv,25,ng/mL,s,
"""


def _conc(t, doses, cl, v):
    """One-compartment IV concentration (mg/L) at ``t`` after doses ``(time, mg, hours)``."""
    k = cl / v
    c = 0.0
    for t0, amt, dur in doses:
        s = t - t0
        if s < 0:
            continue
        if dur > 0:
            c += amt / dur / cl * (1 - np.exp(-k * min(s, dur))) * np.exp(-k * max(s - dur, 0.0))
        else:
            c += amt / v * np.exp(-k * s)
    return c


def _closed_form_values(cl, v):
    """The six rows' values (ng/mL, ng*h/mL) for one subject, from the closed form."""
    inf = [(0.0, 100.0, 2.0)]
    rep = [(12.0 * j, 50.0, 0.0) for j in range(4)]
    f_inf = lambda t: _conc(t, inf, cl, v) * 1000.0  # noqa: E731
    f_rep = lambda t: _conc(t, rep, cl, v) * 1000.0  # noqa: E731
    # the steady-state interval of "q12h x4": the last dose's, 36-48 h
    grid = np.linspace(36.0, 48.0, 4001)
    return [
        f_inf(2.0),  # an infusion peaks at its end
        100.0 / cl * 1000.0,  # AUC0-inf = dose / CL
        f_inf(6.0),
        f_rep(48.0 - 1e-9),  # the trough at the end of the interval
        integrate.quad(f_rep, 36.0, 48.0, epsabs=0, epsrel=1e-12)[0],
        max(f_rep(t) for t in grid),  # the bolus at 36 h: the peak at the interval's start
    ]


@pytest.fixture(scope="module")
def closed_form_spec(tmp_path_factory):
    rng = np.random.default_rng(3)
    arms = pd.read_csv(io.StringIO(ARMS_CLOSED_FORM))
    priors = _priors(tmp_path_factory.mktemp("agg"))
    # 40 virtual subjects are too few for n = 10 (Monte Carlo SE sqrt(10/40) of the summary's)
    with pytest.warns(A.AggregateWarning, match="aggregate_virtual to at least 160"):
        return prepare(
            "one_cmt_iv", _study_a(rng, n=3), priors, aggregate=arms, aggregate_virtual=40
        )


def test_virtual_arms_equal_the_closed_form(closed_form_spec):
    spec = closed_form_spec
    agg = spec.aggregate
    assert spec.study_names == ["A", "B"] and spec.aggregate_studies == ["B"]
    assert agg.independent == ["cl", "v"] and agg.xi.shape == (2, 40, 2)
    pop = {"cl": jnp.asarray(4.0), "v": jnp.asarray(40.0)}
    study = {"cl": jnp.asarray([0.0, 0.2])}  # study B's clearance 22% higher
    sds = {"omega_cl": jnp.asarray(0.3), "omega_v": jnp.asarray(0.2)}
    values = np.asarray(A.virtual_values(agg, spec, pop, study, {}, sds))
    assert values.shape == (6, 40)
    arm_of_row = [0, 0, 0, 1, 1, 1]
    for m in (0, 7, 39):  # a few virtual subjects of each arm
        want = np.empty(6)
        for a in (0, 1):
            cl = 4.0 * np.exp(0.2 + 0.3 * agg.xi[a, m, 0])
            v = 40.0 * np.exp(0.2 * agg.xi[a, m, 1])
            ref = _closed_form_values(cl, v)
            for r in range(6):
                if arm_of_row[r] == a:
                    want[r] = ref[r]
        np.testing.assert_allclose(values[:, m], want, rtol=1e-7)
    # the fixed normals: standardised per arm and parameter
    np.testing.assert_allclose(agg.xi.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(agg.xi.std(axis=1, ddof=1), 1.0, rtol=1e-12)


def test_the_summaries_likelihood_equals_scipys(closed_form_spec):
    """Each arm's statistics jointly Gaussian (scipy's multivariate normal, correlations of
    means, a mean and a median, two medians from their asymptotic forms), each spread through
    its gamma law."""
    agg = closed_form_spec.aggregate
    rng = np.random.default_rng(5)
    z = rng.normal(size=(40, 6)) @ np.linalg.cholesky(0.5 * np.eye(6) + 0.5).T  # correlated
    v = np.exp(np.log([2000, 20000, 1000, 300, 9000, 1500]) + 0.3 * z).T
    ll, mu, se = (np.asarray(x) for x in A.summary_loglik(agg, jnp.asarray(v)))
    rows = agg.data.rows
    xs, ys, sems, spread_ll, jac = [], [], [], [], []
    for i, r in enumerate(rows):
        log = r.statistic == "geomean" or r.statistic == "median"
        x = np.log(v[i]) if log else v[i]
        m, s = x.mean(), x.std(ddof=1)
        sem = s / np.sqrt(r.n) * (np.sqrt(np.pi / 2) if r.statistic == "median" else 1.0)
        y = r.value_model
        xs.append(x), ys.append(np.log(y) if log else y), sems.append(sem)
        jac.append(-np.log(y) if log else 0.0)
        want = 0.0
        spread = {"sd": r.spread_model, "se": (r.spread_model or 0) * np.sqrt(r.n)}.get(r.spread)
        if r.spread == "cv":
            cv = r.spread_value / 100
            spread = np.sqrt(np.log1p(cv**2)) if log else cv * y
        if spread is not None:
            kurt = 0.0 if log else stats.kurtosis(x, fisher=True, bias=True)
            shape = 1.0 / (2.0 / (r.n - 1) + kurt / r.n)
            # s² ~ Gamma(mean σ², variance σ⁴(2/(n-1) + κ/n)); the density of s
            want += stats.gamma.logpdf(spread**2, shape, scale=s**2 / shape) + np.log(2 * spread)
        spread_ll.append(want)
        assert mu[i] == pytest.approx(m, rel=1e-12) and se[i] == pytest.approx(sem, rel=1e-12)
    for arm in ([0, 1, 2], [3, 4, 5]):
        rho = np.corrcoef(np.array([xs[i] for i in arm]))
        med = np.array([rows[i].statistic == "median" for i in arm])
        n = np.array([rows[i].n for i in arm], float)
        r = np.where(
            med[:, None] & med[None, :],
            2 / np.pi * np.arcsin(rho),
            np.where(med[:, None] != med[None, :], rho * np.sqrt(2 / np.pi), rho),
        )
        r *= np.sqrt(np.minimum.outer(n, n) / np.maximum.outer(n, n))
        r = (1 - A.JOINT_SHRINK) * r + A.JOINT_SHRINK * np.eye(3)
        np.fill_diagonal(r, 1.0)
        sem = np.array([sems[i] for i in arm])
        want = stats.multivariate_normal.logpdf([ys[i] for i in arm], [mu[i] for i in arm],
                                                r * np.outer(sem, sem))  # fmt: skip
        want += sum(jac[i] + spread_ll[i] for i in arm)
        assert ll[arm].sum() == pytest.approx(want, rel=1e-9), arm
    # the rows of the first arm are correlated: their joint density is not the product
    indep = sum(stats.norm.logpdf(ys[i], mu[i], sems[i]) + jac[i] + spread_ll[i] for i in (0, 1, 2))
    assert abs(ll[:3].sum() - indep) > 0.01


@pytest.mark.filterwarnings("ignore::pkpd.inference.aggregate.AggregateWarning")
def test_individual_data_and_another_studys_summaries_recover_the_truth(tmp_path):
    """Study A's 10 subjects and study B's three published arms (12 subjects each, synthetic):
    the population values' 90% intervals cover the truth, study B's clearance shift is found,
    and every published summary sits inside its posterior predictive interval."""
    rng = np.random.default_rng(7)
    data, arms = _study_a(rng), _study_b_arms(rng)
    priors = _priors(tmp_path)
    fit = pkpd.fit("one_cmt_iv", data, priors, aggregate=arms, aggregate_virtual=150, chains=1,
                   warmup=150, draws=150, seed=1, progress_bar=False)  # fmt: skip
    post = fit.posterior
    for p, truth in (("pop_cl", CL), ("pop_v", V), ("omega_cl", OMEGA), ("omega_v", OMEGA)):
        lo, hi = np.quantile(post[p].values, [0.05, 0.95])
        assert lo <= truth <= hi, (p, lo, hi)
    eta = post["eta_study_cl"].sel(study=["A", "B"]).values.reshape(-1, 2)
    shift = eta[:, 1] - eta[:, 0]
    lo, hi = np.quantile(shift, [0.05, 0.95])
    assert lo <= SHIFT_B <= hi and lo > 0, (lo, hi)
    table = pkpd.diagnostics.aggregate_table(fit)
    assert len(table) == 6 and table["tail"].between(0.02, 0.98).all(), table
    assert post["aggregate_mu"].dims[-1] == "aggregate_row"
    fig = pkpd.diagnostics.aggregate_plot(fit)
    assert len(fig.axes[0].lines[1].get_xdata()) == 6  # one published dot per summary
    # the fit file alone rebuilds the fit, aggregate data included
    path = pkpd.save_fit(fit, tmp_path / "fit.nc")
    from pkpd.inference.posterior import restore_spec

    spec = restore_spec(pkpd.load_fit(path))
    assert spec.study_names == ["A", "B"] and spec.aggregate.n_virtual == 150
    assert [r.label for r in spec.aggregate.data.rows] == list(post["aggregate_row"].values)


@pytest.mark.filterwarnings("ignore::pkpd.inference.aggregate.AggregateWarning")
def test_doubling_the_virtual_subjects_moves_the_fit_within_monte_carlo_error():
    """Published summaries alone (three 12-subject arms, no study shift), the quick fit
    (method="map") with 150 and 300 virtual subjects per arm: the 90% intervals of the typical
    CL and V cover the truth, and the population values move by less than the Monte Carlo
    error allows: each predicted summary is off by about sqrt(n/M) of its own SE, so a
    posterior the summaries pin moves by at most about sqrt(n/M1 + n/M2) = 0.35 of its SD."""
    arms = _study_b_arms(np.random.default_rng(21), shift=0.0)
    fits = [
        pkpd.fit(
            "one_cmt_iv",
            None,
            aggregate=arms,
            aggregate_virtual=m,
            method="map",
            draws=400,
            seed=2,
            progress_bar=False,
        )  # fmt: skip
        for m in (150, 300)
    ]
    for p, truth in (("pop_cl", CL), ("pop_v", V)):
        lo, hi = np.quantile(fits[1].posterior[p].values, [0.05, 0.95])
        assert lo <= truth <= hi, (p, lo, hi)
    bound = np.sqrt(12 / 150 + 12 / 300)
    for p in ("pop_cl", "pop_v", "omega_cl", "omega_v"):
        a, b = (np.log(f.posterior[p].values.ravel()) for f in fits)
        assert abs(np.median(a) - np.median(b)) < bound * max(a.std(), b.std()), p


def test_a_summary_of_an_endpoint_the_fit_does_not_fit_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    arms = _study_b_arms(rng, doses=(100,))
    arms["ENDPOINT"] = "effect"
    with pytest.raises(pkpd.data.DatasetError, match="no endpoint 'effect'"):
        prepare("one_cmt_iv", _study_a(rng, n=2), _priors(tmp_path), aggregate=arms)


def test_cli_fit_reports_a_bad_aggregate_file_and_writes_nothing(tmp_path, capsys):
    from pkpd.cli import main

    rng = np.random.default_rng(2)
    data = tmp_path / "data.csv"
    _study_a(rng, n=2).to_csv(data, index=False)
    arms = _study_b_arms(rng, doses=(100,))
    arms.loc[1, "N"] = 0
    arms.loc[0, "UNIT"] = "mg"
    path = tmp_path / "arms.csv"
    arms.to_csv(path, index=False)
    out = tmp_path / "fit.nc"
    rc = main(["fit", str(data), "--model", "one_cmt_iv", "--aggregate", str(path),
               "--out", str(out), "--method", "map", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert "line 3, column N" in err  # the header is line 1
    assert "line 2, column UNIT" in err and "Traceback" not in err
    # the output may not overwrite an input
    rc = main(["fit", str(data), "--model", "one_cmt_iv", "--aggregate", str(path),
               "--out", str(path), "--quiet"])  # fmt: skip
    assert rc == 2 and "--aggregate" in capsys.readouterr().err
    # no data and no summaries: nothing to fit, said before any work
    rc = main(["fit", "--model", "one_cmt_iv", "--out", str(out), "--quiet"])
    assert rc == 2 and "--aggregate" in capsys.readouterr().err and not out.exists()


def test_the_bundled_label_summaries_and_the_temsirolimus_model():
    """The bundled published summaries (Torisel label: a single 25 mg dose) read against the
    temsirolimus model; at the priors' typical values (between-subject SDs 0) the virtual arm
    equals the closed forms of linear PK: AUC0-inf of the parent = dose/CL, and the sirolimus
    to temsirolimus AUC ratio = fm · (MW_sir/MW_tem) · CL/CL_sir; and it is near the label's
    585 ng/mL, 1627 ng·h/mL and 2.7, from which the priors were built."""
    ds, _ = pkpd.datasets.load("temsirolimus_small")
    path = ROOT / "datasets" / "temsirolimus" / "published_summaries.csv"
    spec = prepare("temsirolimus", ds, aggregate=path, aggregate_virtual=200)
    assert spec.aggregate_studies == ["LABEL"]
    typ = spec.priors.typical()
    pop = {p: jnp.asarray(typ[p]) for p in spec.estimated}
    agg = spec.aggregate
    sds = {f"omega_{p}": jnp.asarray(0.0) for p in agg.independent + agg.correlated}
    beta = {e.name: e.prior.params.get("value", 0.0) for e in spec.effects}
    cmax, auc, ratio = np.asarray(A.virtual_values(agg, spec, pop, {}, beta, sds))[:, 0]
    assert auc == pytest.approx(25.0 / typ["cl"] * 1000.0, rel=1e-6)
    mw = spec.model.endpoint_molar_masses
    want = typ["fm"] * mw["sirolimus"] / mw["temsirolimus"] * typ["cl"] / typ["cl_sir"]
    assert ratio == pytest.approx(want, rel=1e-4)
    for got, label in ((cmax, 585.0), (auc, 1627.0), (ratio, 2.7)):
        assert got == pytest.approx(label, rel=0.1)


@pytest.mark.filterwarnings("ignore::pkpd.inference.aggregate.AggregateWarning")
def test_published_summaries_alone_recover_typical_clearance_and_volume(tmp_path):
    """No individual data, NUTS: three published 12-subject arms (100, 300, 1000 mg; mean Cmax
    with SD, geometric mean AUC0-inf with the SD of its logs) of a study without a study effect.
    The 90% intervals of the typical CL and V cover the truth, and a fit without data or
    summaries is refused."""
    arms = _study_b_arms(np.random.default_rng(21), shift=0.0)
    fit = pkpd.fit("one_cmt_iv", None, aggregate=arms, aggregate_virtual=150, chains=1,
                   warmup=150, draws=150, seed=3, progress_bar=False)  # fmt: skip
    post = fit.posterior
    assert post.sizes["subject"] == 0 and fit.attrs["data_source"] == "(no individual data)"
    for p, truth in (("pop_cl", CL), ("pop_v", V)):
        lo, hi = np.quantile(post[p].values, [0.05, 0.95])
        assert lo <= truth <= hi, (p, lo, hi)
    # the file alone serves the report: the summaries' section, no observations to check
    path = pkpd.save_fit(fit, tmp_path / "fit.nc")
    page = pkpd.report(pkpd.load_fit(path), out=tmp_path / "report.html", strict=True)
    html = page.read_text()
    assert "Published summaries" in html and ">300 mg</td>" in html
    assert "No individual data" in html
    with pytest.raises(pkpd.FitError, match="no data"):
        pkpd.fit("one_cmt_iv", None)


@pytest.mark.filterwarnings("ignore::pkpd.inference.aggregate.AggregateWarning")
def test_an_endpoint_only_the_summaries_inform_is_fitted_too():
    """Individual temsirolimus concentrations only, and the label's sirolimus/temsirolimus AUC
    ratio: sirolimus joins the fitted endpoints (its parameters estimated, no observations of
    it); leaving it out with endpoints= while summaries name it is refused."""
    table = pd.read_csv(pkpd.datasets.path("temsirolimus_small"), comment="#", dtype=str)
    ds = pkpd.read_dataset(table[table["DVID"].isin([".", "1"])], model="temsirolimus")
    assert ds.endpoints == ("temsirolimus",)
    path = ROOT / "datasets" / "temsirolimus" / "published_summaries.csv"
    spec = prepare("temsirolimus", ds, aggregate=path, aggregate_virtual=50)
    assert spec.endpoints == ["temsirolimus", "sirolimus"]
    assert {"cl_sir", "v_sir"} <= set(spec.estimated)
    assert set(np.asarray(spec.obs_endpoint)) == {0}  # every observation is temsirolimus
    with pytest.raises(pkpd.FitError, match="summarise endpoint.*sirolimus.*endpoints="):
        prepare("temsirolimus", ds, endpoints=["temsirolimus"], aggregate=path)
