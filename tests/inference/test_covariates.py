"""Covariate effects chosen at fit time (expressions) and fits rebuilt from their files."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.inference.covariates import CovariateSpecError, parse_expression
from pkpd.inference.fit import FitError, fit, prepare, save_fit
from pkpd.inference.posterior import restore_dataset, restore_spec
from pkpd.models import load_model

COLUMNS = {"WT": np.array([50.0, 70.0, 90.0, 110.0]), "INH": np.array([0.0, 1.0, 0.0, 1.0])}


def test_expression_defaults_and_options():
    (cl,) = parse_expression("cl~WT", parameters=["cl", "v"], columns=COLUMNS)
    assert (cl.form, cl.reference, cl.covariate) == ("power", 80.0, "WT")  # median reference
    assert cl.prior.family == "normal" and cl.prior.params == {"mean": 0.0, "sd": 1.0}
    effs = parse_expression(
        "cl, v ~ wt power(ref=70, fixed=0.75)", parameters=["cl", "v"], columns=COLUMNS
    )
    assert [e.name for e in effs] == ["cl_wt", "v_wt"]
    assert all(e.prior.is_fixed and e.prior.params["value"] == 0.75 for e in effs)
    assert all(e.reference == 70.0 for e in effs)
    (inh,) = parse_expression("cl~INH", parameters=["cl"], columns=COLUMNS)
    assert inh.form == "categorical" and inh.prior.family == "lognormal"
    (lin,) = parse_expression("v~WT linear(prior=normal(0.01, 0.02))", parameters=["v"],
                              columns=COLUMNS)  # fmt: skip
    assert lin.form == "linear" and lin.prior.params == {"mean": 0.01, "sd": 0.02}
    (ex,) = parse_expression("v~WT exponential", parameters=["v"], columns=COLUMNS)
    assert ex.prior.params["sd"] == pytest.approx(0.5 / np.std(COLUMNS["WT"]))


@pytest.mark.parametrize(
    "expr, match",
    [
        ("cl WT", "not an expression"),
        ("ka~WT", "not among the estimated parameters"),
        ("cl~HEIGHT", "no column HEIGHT"),
        ("cl~WT cubic", "form 'cubic'"),
        ("cl~WT power(ref=abc)", "is not a number"),
        ("cl~WT power(scale=2)", "unknown option 'scale'"),
        ("cl~WT power(fixed=1, prior=normal(0, 1))", "either fixed= or prior="),
        ("cl~WT categorical", "needs a 0/1 column"),
        ("cl~INH categorical(fixed=-1)", "must be > 0"),
        ("cl~WT power(prior=beta(1, 2))", "expected normal"),
    ],
)
def test_expression_errors_say_what_is_wrong(expr, match):
    with pytest.raises(CovariateSpecError, match=match):
        parse_expression(expr, parameters=["cl", "v"], columns=COLUMNS)


@pytest.fixture(scope="module")
def weight_study():
    """30 subjects, CL = 2 (WT/70)^0.75, V = 30 (WT/70): known truth."""
    rng = np.random.default_rng(11)
    S, times = 30, [0.25, 1, 2, 4, 8, 12, 24]
    wt = rng.uniform(45, 120, S)
    rows = []
    for i in range(S):
        rows.append(dict(ID=i + 1, TIME=0.0, EVID=1, AMT=100.0, DV=np.nan, WT=wt[i]))
        rows += [dict(ID=i + 1, TIME=t, EVID=0, AMT=0.0, DV=1.0, WT=wt[i]) for t in times]
    df = pd.DataFrame(rows)
    pad = pkpd.read_dataset(df).to_arrays()
    eta = rng.normal(0, [0.2, 0.15], size=(S, 2))
    params = {
        "cl": 2.0 * (wt / 70) ** 0.75 * np.exp(eta[:, 0]),
        "v": 30.0 * (wt / 70) * np.exp(eta[:, 1]),
    }
    pred = jax.vmap(load_model("one_cmt_iv").predict)(params, jax.tree.map(jnp.asarray, pad.data))
    y = np.asarray(pred["conc"]) * np.exp(rng.normal(0, 0.1, pad.data.point_time.shape))
    df.loc[df.EVID == 0, "DV"] = y[np.asarray(pad.data.point_mask)]
    return df


def test_weight_effect_is_recovered_and_documented(weight_study, tmp_path):
    idata = fit(
        "one_cmt_iv",
        weight_study,
        chains=2,
        warmup=200,
        draws=200,
        seed=1,
        progress_bar=False,
        covariates=["cl~WT power(ref=70)", "v~WT power(ref=70, fixed=1)"],
    )
    b = idata.posterior["beta_cl_wt"].values
    lo, hi = np.quantile(b, [0.05, 0.95])
    assert lo < 0.75 < hi and hi - lo < 0.6
    assert "beta_v_wt" not in idata.posterior  # fixed: not a sampled quantity
    detail = idata.attrs["covariate_effects_detail"]
    assert '"fixed", "value": 1.0' in detail and '"reference": 70.0' in detail
    # the individual parameters carry the fixed exponent exactly
    wt = idata.constant_data["covariates"].values[:, 0]
    post = idata.posterior
    np.testing.assert_allclose(
        post["theta_v"].values,
        post["pop_v"].values[..., None] * (wt / 70.0) * np.exp(post["eta_v"].values),
        rtol=1e-10,
    )
    # the file alone rebuilds the same fit set-up
    back = pkpd.load_fit(save_fit(idata, tmp_path / "fit.nc"))
    spec = restore_spec(back)
    orig = prepare("one_cmt_iv", weight_study, covariates=["cl~WT power(ref=70)",
                                                           "v~WT power(ref=70, fixed=1)"])  # fmt: skip
    assert [e.name for e in spec.effects] == ["cl_wt", "v_wt"]
    np.testing.assert_array_equal(spec.obs_y, orig.obs_y)
    np.testing.assert_array_equal(spec.padded.data.dose_time, orig.padded.data.dose_time)
    pd.testing.assert_frame_equal(restore_dataset(back).records, orig.dataset.records)


def test_unknown_named_effect_points_to_expressions(weight_study):
    with pytest.raises(FitError, match="expression such as"):
        prepare("one_cmt_iv", weight_study, covariates=["cl_weight"])
    with pytest.raises(FitError, match="no column HEIGHT"):
        prepare("one_cmt_iv", weight_study, covariates=["cl~HEIGHT"])
