"""Simulation-based calibration: the uniformity test, the prior draws and data it fits, and a
small run end to end (written, resumed, reported)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import pkpd
from pkpd.inference import calibration as C
from pkpd.inference import sbc as S

from closed_forms import one_cmt_oral_conc

PRIORS = """
[model]
name = "one_cmt_oral"

[parameters.cl]
unit = "L/h"
prior = { family = "lognormal", median = 5.0, sd_log = 0.3 }
bsv = { family = "halfnormal", scale = 0.3 }

[parameters.v]
unit = "L"
prior = { family = "lognormal", median = 50.0, sd_log = 0.3 }
bsv = { family = "halfnormal", scale = 0.3 }

[parameters.ka]
unit = "1/h"
prior = { family = "lognormal", median = 1.5, sd_log = 0.3 }
bsv = { family = "halfnormal", scale = 0.3 }

[residual.conc]
model = "proportional"
unit = "ng/mL"
proportional = { family = "halfnormal", scale = 0.2 }
"""
TIMES = (0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0)


def design(n_subjects=6, lloq=None) -> pd.DataFrame:
    rows = []
    for i in range(1, n_subjects + 1):
        rows.append(dict(ID=i, TIME=0.0, EVID=1, AMT=100.0, DV=np.nan, LLOQ=np.nan))
        for t in TIMES:
            rows.append(dict(ID=i, TIME=t, EVID=0, AMT=0.0, DV=1.0, LLOQ=lloq or np.nan))
    df = pd.DataFrame(rows)
    return df if lloq else df.drop(columns="LLOQ")


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    path = tmp_path_factory.mktemp("sbc") / "priors.toml"
    path.write_text(PRIORS)
    return path


# -- the uniformity test ---------------------------------------------------------------------------
@pytest.mark.parametrize("n, n_ranks", [(50, 100), (200, 100), (30, 50)])
def test_the_band_is_simultaneous_at_its_level(n, n_ranks):
    """Uniform ranks (drawn here with another seed than the band's) leave the 95% band in about
    5% of samples, and the test's p-values are uniform: P(p <= a) ~ a."""
    band = C.simultaneous_band(n, n_ranks, alpha=0.05, seed=0)
    ranks = np.random.default_rng(99).integers(0, n_ranks, size=(4000, n))
    outside = np.mean([C.outside_band(r, band) for r in ranks])
    assert 0.035 <= outside <= 0.07, outside  # measured 0.050-0.055; MC sd 0.0034
    p = np.array([C.uniformity_p_value(r, band) for r in ranks[:2000]])
    for a in (0.05, 0.2, 0.5):
        assert abs(np.mean(p <= a) - a) < 0.035, (a, np.mean(p <= a))
    # the band's limits are binomial quantiles at the pointwise level gamma
    np.testing.assert_allclose(band.lower * n, stats.binom.ppf(band.gamma / 2, n, band.z))


def test_miscalibrated_ranks_are_found():
    """50 replicates: ranks from posteriors too narrow (truth often outside: U shape), too
    wide (truth in the middle: a hump) or biased (ranks pushed up) all fail at p < 0.01;
    uniform ranks pass."""
    rng = np.random.default_rng(5)
    n, L = 50, 99
    band = C.simultaneous_band(n, L + 1, seed=1)
    u = rng.uniform(size=n)
    narrow = np.floor(stats.beta(0.4, 0.4).ppf(u) * (L + 1)).astype(int)
    wide = np.floor(stats.beta(5, 5).ppf(u) * (L + 1)).astype(int)
    biased = np.floor(stats.beta(2, 1).ppf(u) * (L + 1)).astype(int)
    for name, r in (("narrow", narrow), ("wide", wide), ("biased", biased)):
        assert C.uniformity_p_value(r, band) < 0.01, name
        assert C.outside_band(r, band), name
    # the rank histogram's chi-square test is weaker (Sailynoja et al. 2022): it misses the bias
    assert C.chi_square_p_value(narrow, L + 1) < 0.01
    assert C.chi_square_p_value(biased, L + 1) > C.uniformity_p_value(biased, band)
    ok = rng.integers(0, L + 1, size=n)
    assert C.uniformity_p_value(ok, band) > 0.05


# -- what a replicate fits -------------------------------------------------------------------------
def test_prior_draws_give_the_closed_form_data_with_their_error(priors):
    """Each replicate's data are the one-compartment oral closed form at its drawn individual
    parameters, with proportional error of its drawn SD: standardised residuals are N(0, 1)
    (Kolmogorov-Smirnov over 60 replicates); replicate i does not depend on which others ran."""
    from pkpd.inference.spec import prepare

    spec = prepare("one_cmt_oral", design(), priors)
    draws = S._prior_draws(spec, 3, range(60))
    z = []
    for i in range(60):
        vals, parts, rejected = draws[i]
        assert rejected == 0
        f = np.empty_like(parts["f"])
        for k in range(6):
            sel = spec.obs_subject == k
            theta = {p: float(vals[f"theta_{p}"][k]) for p in ("ka", "cl", "v")}
            f[sel] = one_cmt_oral_conc(spec.obs_time[sel], [(0.0, 100.0)], **theta)
        np.testing.assert_allclose(parts["f"], f, rtol=1e-9)
        z.append((vals["y"] - f) / (f * float(vals["sigma_prop_conc"])))
    z = np.concatenate(z)
    assert stats.kstest(z, "norm").pvalue > 0.001
    # population values drawn from their priors: log CL ~ N(log 5, 0.3)
    log_cl = np.log([float(draws[i][0]["pop_cl"]) for i in range(60)])
    assert stats.kstest(log_cl, "norm", args=(np.log(5.0), 0.3)).pvalue > 0.001
    again = S._prior_draws(spec, 3, [7])[7][0]
    np.testing.assert_array_equal(again["y"], draws[7][0]["y"])


def test_censoring_follows_the_simulated_values(priors):
    """With an LLOQ, a replicate's records are BLQ exactly where its simulated value is below
    it (not where the design's were), and the fit reads them so."""
    from pkpd.inference.spec import prepare

    spec = prepare("one_cmt_oral", design(lloq=300.0), priors)
    vals = S._prior_draws(spec, 0, [0])[0][0]
    ds, blq = S._replicate_dataset(spec, vals["y"])
    np.testing.assert_array_equal(blq, vals["y"] < 300.0)
    assert 0 < blq.sum() < blq.size
    again = prepare("one_cmt_oral", ds, priors)
    np.testing.assert_array_equal(again.obs_blq, blq)
    np.testing.assert_array_equal(again.obs_y[~blq], vals["y"][~blq])
    # the design (DV 1 ng/mL: every record below its LLOQ) is untouched
    assert spec.obs_blq.all() and spec.dataset.records.loc[spec.dataset._obs_mask(), "BLQ"].all()


def test_prior_predictive_shows_priors_too_wide_for_sbc(priors):
    """The bundled weakly informative priors spread the draws' median concentration over
    decades; the informative test priors keep it within one."""
    from pkpd.inference.sbc import prior_predictive, prior_predictive_table

    wide = prior_predictive_table(prior_predictive("one_cmt_oral", design(), n=100, seed=1))
    tight = prior_predictive_table(prior_predictive("one_cmt_oral", design(), priors, n=100))
    col = "decades spanned by draws' medians"
    assert wide[col].iloc[0] > 3 and tight[col].iloc[0] < 1.2


# -- a run end to end ------------------------------------------------------------------------------
def test_a_run_is_written_resumed_and_reported(priors, tmp_path, capsys, monkeypatch):
    """Two replicates (short NUTS fits, compilation most of their ~15 s each), fitted at once in
    two worker processes, are written as they finish; a rerun finds them and fits nothing; a
    longer run fits only the new one; other settings are refused; the page is written."""
    out = tmp_path / "sbc.nc"
    kw = dict(chains=1, warmup=40, draws=30, ranks=29, seed=2, subjects=2, out=out,
              parameterization="noncentered")  # fmt: skip
    first = pkpd.sbc("one_cmt_oral", design(4), priors, n=2, workers=2, **kw)
    assert first.sizes["replicate"] == 2
    names = list(first["quantity"].values)
    for q in ("pop_cl", "omega_ka", "sigma_prop_conc", "loglik", "theta_cl[1]", "theta_v[2]"):
        assert q in names, q
    assert first["rank"].min() >= 0 and first["rank"].max() <= 29
    files = sorted((tmp_path / "sbc.nc.replicates").glob("replicate_*.nc"))
    assert len(files) == 2
    mtimes = [f.stat().st_mtime_ns for f in files]
    # the same settings again: every replicate is read back, nothing is fitted
    ran = []
    settings = pkpd.load_sbc(out).attrs["settings"]
    per_quantity = [
        "p_value",
        "chi_square_p_value",
        "verdict",
        "band_z",
        "band_lower",
        "band_upper",
    ]

    def counted(i, *args):
        """Stands in for a fit: replicate 0's result under index i."""
        ran.append(i)
        rep = first.isel(replicate=0).drop_vars(["replicate", *per_quantity])
        return rep.assign_attrs(replicate=i, settings=settings)

    monkeypatch.setattr(S, "_run_replicate", counted)
    capsys.readouterr()
    again = pkpd.sbc("one_cmt_oral", design(4), priors, n=2, **kw)
    assert ran == [] and "2 replicate(s) found" in capsys.readouterr().err
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    np.testing.assert_array_equal(again["rank"].values, first["rank"].values)
    # a longer run: only the new replicate is fitted
    longer = pkpd.sbc("one_cmt_oral", design(4), priors, n=3, **kw)
    assert ran == [2] and longer.sizes["replicate"] == 3
    np.testing.assert_array_equal(longer["rank"].values[:2], first["rank"].values)
    loaded = pkpd.load_sbc(out)
    np.testing.assert_array_equal(loaded["rank"].values, longer["rank"].values)
    assert json.loads(loaded.attrs["settings"])["ranks"] == 29
    assert list(loaded["verdict"].dims) == ["quantity"]
    with pytest.raises(S.SBCError, match="seed"):
        pkpd.sbc("one_cmt_oral", design(4), priors, n=3, **{**kw, "seed": 3})
    assert ran == [2]
    from pkpd.report.sbc import sbc_report

    html = sbc_report(loaded, tmp_path / "sbc.html").read_text()
    assert html.count("data:image/png") == 2 and "pop_cl" in html
    with pytest.raises(S.SBCError, match="no such"):
        pkpd.load_sbc(tmp_path / "missing.nc")


def test_cli_prior_check_and_bad_input(priors, tmp_path, capsys):
    from pkpd.cli import EXIT_BAD_INPUT, main

    data = tmp_path / "design.csv"
    design().to_csv(data, index=False, na_rep=".")
    args = ["sbc", "--model", "one_cmt_oral", "--design", str(data), "--priors", str(priors)]
    assert main([*args, "--n", "50", "--prior-check"]) == 0
    out = capsys.readouterr().out
    assert "decades spanned" in out and "conc" in out
    # nothing to write: refused before any work
    assert main(args) == EXIT_BAD_INPUT
    assert "--out" in capsys.readouterr().err
    assert main([*args, "--out", str(data)]) == EXIT_BAD_INPUT  # would overwrite an input
    assert data.read_text().startswith("ID,")
    missing = ["sbc", "--model", "one_cmt_oral", "--design", str(tmp_path / "no.csv"),
               "--out", str(tmp_path / "x.nc")]  # fmt: skip
    assert main(missing) == EXIT_BAD_INPUT
    assert not (tmp_path / "x.nc").exists()
    # --batch with the default "auto" parameterization: refused before any work
    assert main([*args, "--out", str(tmp_path / "x.nc"), "--batch", "4"]) == EXIT_BAD_INPUT
    assert 'parameterization="centered" or "noncentered"' in capsys.readouterr().err
    assert not (tmp_path / "x.nc").exists()


def test_correlations_are_ranked_with_their_lkj_truth(priors, tmp_path):
    """With a [correlation] block the truth of corr_cl_v is (L Lᵀ)₀₁ of the drawn LKJ factor:
    for two parameters (r + 1)/2 ~ Beta(η, η) (Lewandowski, Kurowicka & Joe 2009), checked over
    200 draws; the quantity is ranked against the fit's correlation draws."""
    from pkpd.inference.spec import prepare
    from pkpd.simulate.synthetic import fit_from_values

    path = tmp_path / "corr.toml"
    path.write_text(PRIORS + '\n[correlation]\nparameters = ["cl", "v"]\nlkj_eta = 2.0\n')
    spec = prepare("one_cmt_oral", design(), path)
    draws = S._prior_draws(spec, 4, range(200))
    r = np.array([(d[0]["corr_cholesky"] @ d[0]["corr_cholesky"].T)[0, 1] for d in draws.values()])
    assert stats.kstest((r + 1) / 2, stats.beta(2.0, 2.0).cdf).pvalue > 0.001
    fake = fit_from_values("one_cmt_oral", design(), {"cl": 5.0, "v": 50.0, "ka": 1.5},
                           omega={"cl": 0.3, "v": 0.3, "ka": 0.3}, n_draws=20, priors=path)  # fmt: skip
    q = S._quantities(spec, draws[0][0], fake.posterior, 0)
    assert q["corr_cl_v"][0] == pytest.approx(r[0])
    assert q["corr_cl_v"][1].shape == fake.posterior["pop_cl"].shape


# -- replicates batched: calibrated, and a broken simulator caught -----------------------------------
BATCH = dict(n=12, chains=2, warmup=100, draws=50, ranks=99, seed=11, subjects=2,
             parameterization="noncentered", batch=12, progress=False)  # fmt: skip


def _halve_the_residual_error(real):
    """``_prior_draws`` with a broken simulator: every observation's deviation from its
    prediction halved (so the data carry half the residual SD the truth says)."""

    def broken(spec, seed, indices):
        out = real(spec, seed, indices)
        for values, parts, _ in out.values():
            values["y"] = parts["f"] + 0.5 * (values["y"] - parts["f"])
        return out

    return broken


def test_batched_replicates_pass_and_a_broken_simulator_fails_the_same_test(priors, monkeypatch):
    """12 replicates of the one-compartment oral design (10 subjects × 7 samples), NUTS
    2 × (100 + 50) each, vectorised in one program (the second run loads it from JAX's
    cache): with the true simulator no quantity's ranks fail the ECDF test (p > 0.001 each;
    measured 0.03-0.95); with the data simulated at half the residual SD the same test calls the
    residual SD suspicious, its truth above every thinned draw in most replicates. 12 replicates
    catch a gross error like this one; the recorded 50-replicate runs are in
    benchmarks/RESULTS.md (a suite run of 50 would take ~3 minutes of the suite's ~20)."""
    good = pkpd.sbc("one_cmt_oral", design(10), priors, **BATCH)
    assert good.sizes["replicate"] == 12
    names = set(good["quantity"].values)
    assert {"pop_cl", "pop_v", "pop_ka", "omega_cl", "sigma_prop_conc", "theta_cl[1]"} <= names
    assert float(good["p_value"].min()) > 0.001, good["p_value"].to_series().to_dict()
    assert int(good["divergences"].sum()) <= 0.01 * 12 * 100

    monkeypatch.setattr(S, "_prior_draws", _halve_the_residual_error(S._prior_draws))
    bad = pkpd.sbc("one_cmt_oral", design(10), priors, **BATCH)
    sigma = bad.sel(quantity="sigma_prop_conc")
    assert str(sigma["verdict"].values) == "suspicious"
    assert (sigma["rank"].values >= 95).mean() >= 0.9
    # only the residual SD is affected this much
    others = bad.drop_sel(quantity="sigma_prop_conc")
    assert float(others["p_value"].min()) > 0.001


def test_a_batch_refuses_what_it_cannot_run(priors):
    with pytest.raises(S.SBCError, match='parameterization="centered" or "noncentered"'):
        pkpd.sbc("one_cmt_oral", design(4), priors, n=2, batch=2)
    with pytest.raises(S.SBCError, match="LLOQ"):
        pkpd.sbc("one_cmt_oral", design(4, lloq=0.5), priors, n=2, batch=2,
                 parameterization="noncentered")  # fmt: skip
