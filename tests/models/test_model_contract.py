"""The model contract (pkpd.models.Model): every registered model satisfies it, through jit,
vmap and grad, and a model written outside pkpd is read, checked and fitted through it."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.inference.fit import FitError, build_model, prepare
from pkpd.models import MODELS, Model, check_model
from pkpd.pk import analytic

NAMES = sorted(MODELS)


def _subjects(model, n=2):
    """Two subjects: a 1-h infusion and a bolus, 12 h apart, sampled over two days, every
    endpoint of the model observed at every time (DVID by the model's codes)."""
    codes = model.endpoint_codes or {1: model.endpoints[0]}
    code_of = {e: c for c, e in codes.items()}
    rows = []
    for i in range(n):
        rows.append(dict(ID=i + 1, TIME=0.0, EVID=1, AMT=10.0 * (i + 1), DUR=1.0, DVID=0, DV="."))
        rows.append(dict(ID=i + 1, TIME=12.0, EVID=1, AMT=5.0, DUR=0.0, DVID=0, DV="."))
        for t in (0.5, 2.0, 8.0, 13.0, 24.0, 48.0):
            for e in model.endpoints:
                rows.append(dict(ID=i + 1, TIME=t, EVID=0, AMT=0.0, DUR=0.0, DVID=code_of[e], DV=1))
    df = pd.DataFrame(rows).sort_values(["ID", "TIME"], kind="stable")
    return pkpd.read_dataset(df, model=model).to_arrays().data


def _typical(model):
    typ = pkpd.load_priors(model=model.name).typical()
    return {p: float(typ[p]) for p in model.structural_parameters}


@pytest.mark.parametrize("name", NAMES)
def test_registered_models_describe_themselves(name):
    model = MODELS[name]
    check_model(model)
    assert isinstance(model, Model) and model.name == name
    for table in (model.parameters, model.endpoint_units):
        assert table and all(isinstance(k, str) and isinstance(v, str) for k, v in table.items())
    assert set(model.structural_parameters) <= set(model.parameters) <= set(model.all_parameters)
    assert set(model.concentration_endpoints) <= set(model.endpoints)
    for e, v in model.concentration_volumes.items():
        assert e in model.concentration_endpoints and v in model.parameters
    if model.endpoint_codes is not None:
        assert set(model.endpoint_codes.values()) >= set(model.endpoints)
    assert set(model.costly_endpoints) <= set(model.endpoints)
    for ic50, (hill, _scale) in model.hill_levels.items():
        assert ic50 in model.all_parameters and hill in model.all_parameters
    assert all(isinstance(k, int) for k in model.compartments)


@pytest.mark.parametrize("name", NAMES)
def test_predict_goes_through_jit_vmap_and_grad(name):
    """jit(vmap(predict)) equals predict one subject at a time; every endpoint is finite and
    its gradient with respect to every parameter too."""
    model = MODELS[name]
    subjects = _subjects(model)
    params = _typical(model)
    batch = {p: jnp.full(2, v) for p, v in params.items()}
    out = jax.jit(jax.vmap(model.predict))(batch, subjects)
    predict_one = jax.jit(model.predict)
    for i in range(2):
        one = predict_one(params, jax.tree.map(lambda x, i=i: x[i], subjects))
        for e in model.endpoints:
            np.testing.assert_allclose(out[e][i], one[e], rtol=1e-10, atol=1e-12)
    for e in model.endpoints:
        assert out[e].shape == subjects.point_time.shape and np.all(np.isfinite(out[e])), e
        assert bool(jnp.all(out.get("ok", True)))

    def total(p):
        res = model.predict(p, jax.tree.map(lambda x: x[0], subjects))
        return sum(jnp.sum(res[e]) for e in model.endpoints)

    grad = jax.jit(jax.grad(total))(params)
    assert set(grad) == set(params)
    assert all(np.isfinite(float(g)) for g in grad.values()), grad


@pytest.mark.parametrize("name", NAMES)
def test_parameter_and_subject_checks(name):
    model = MODELS[name]
    params = _typical(model)
    model.check_parameters(params)
    first = model.structural_parameters[0]
    with pytest.raises(ValueError, match=f"missing parameter.*{first}"):
        model.check_parameters({k: v for k, v in params.items() if k != first})
    with pytest.raises(ValueError, match="unknown parameter.*nonsense"):
        model.check_parameters({**params, "nonsense": 1.0})
    subjects = _subjects(model)
    assert model.check_subject(subjects) == []
    bad = jax.tree.map(np.asarray, subjects)
    cmt = np.array(bad.dose_cmt)
    cmt[0, 0] = 99
    problems = model.check_subject(type(bad)(**{**vars(bad), "dose_cmt": cmt}))
    assert len(problems) == 1 and "99" in problems[0]


@pytest.mark.parametrize("name", NAMES)
def test_each_endpoint_alone_predicts_what_the_whole_model_does(name):
    model = MODELS[name]
    subject = jax.tree.map(lambda x: x[0], _subjects(model))
    params = _typical(model)
    full = jax.jit(model.predict)(params, subject)
    for e in model.endpoints:
        alone = model.with_endpoints([e])
        assert alone.endpoints == (e,)
        sub = {p: v for p, v in params.items() if p in alone.parameters}
        np.testing.assert_allclose(jax.jit(alone.predict)(sub, subject)[e], full[e], rtol=1e-9)
    with pytest.raises(ValueError, match="nonsense"):
        model.with_endpoints(["nonsense"])


@pytest.mark.parametrize("name", NAMES)
def test_the_modal_form_is_the_same_model(name):
    """After one bolus, each concentration output of the modal form, Σ c_m e^{-λ_m t} per mg,
    matches predict (the two forms the contract lets a model give of itself)."""
    model = MODELS[name]
    params = _typical(model)
    assert model.modal_parameters_supported(list(params))
    form = model.modal_form(params)
    times = np.array([0.25, 1.0, 6.0, 30.0, 100.0])
    df = pd.DataFrame(
        [dict(ID=1, TIME=0.0, EVID=1, AMT=7.0, DV=".")]
        + [dict(ID=1, TIME=t, EVID=0, AMT=0.0, DV=1.0) for t in times]
    )
    subject = jax.tree.map(
        lambda x: x[0],
        pkpd.read_dataset(df, endpoints={1: model.concentration_endpoints[0]}).to_arrays().data,
    )
    pred = jax.jit(model.predict)(params, subject)
    for e in model.concentration_endpoints:
        modal = 7.0 * np.exp(-np.outer(times, np.asarray(form.poles))) @ np.asarray(form.outputs[e])
        np.testing.assert_allclose(pred[e][: len(times)], modal, rtol=1e-9)


# -- a model written outside pkpd -------------------------------------------------------------------
@dataclass(frozen=True)
class BolusEmax(Model):
    """One-compartment IV bolus with a direct Emax effect; nothing of it is known to pkpd."""

    name: str = "bolus_emax_test"

    @property
    def parameters(self):
        return {"cl": "L/h", "v": "L", "emax": "%", "ec50": "ng/mL"}

    @property
    def endpoint_units(self):
        return {"cp": "ng/mL", "effect": "%"}

    @property
    def compartments(self):
        return {1: "central"}

    @property
    def endpoint_codes(self):
        return {1: "cp", 2: "effect"}

    @property
    def concentration_endpoints(self):
        return ("cp",)

    def predict(self, params, subject):
        doses = analytic.dose_terms(subject, {}, {1: 0}, default_compartment=0)
        resp = analytic.state_response(
            analytic.disposition(params["cl"], params["v"]), None, state=0
        )
        t = jnp.asarray(subject.point_time, dtype=float)
        amount = analytic.superpose(
            resp, doses, t, jnp.asarray(subject.point_seq), jnp.asarray(subject.point_segment)
        )
        cp = 1000.0 * amount / params["v"]
        return {"cp": cp, "effect": params["emax"] * cp / (params["ec50"] + cp)}


jax.tree_util.register_static(BolusEmax)

PRIORS = """
[model]
name = "bolus_emax_test"

[parameters.cl]
unit = "L/h"
prior = { family = "lognormal", median = 2.0, sd_log = 0.5 }
bsv = { family = "halfnormal", scale = 0.3 }
source = "test"

[parameters.v]
unit = "L"
prior = { family = "lognormal", median = 20.0, sd_log = 0.5 }
source = "test"

[parameters.emax]
unit = "%"
prior = { family = "lognormal", median = 80.0, sd_log = 0.3 }
source = "test"

[parameters.ec50]
unit = "ng/mL"
prior = { family = "lognormal", median = 500.0, sd_log = 0.5 }
source = "test"

[residual.cp]
model = "proportional"
unit = "ng/mL"
proportional = { family = "halfnormal", scale = 0.2 }
source = "test"

[residual.effect]
model = "additive"
unit = "%"
additive = { family = "halfnormal", scale = 5.0 }
source = "test"
"""


def test_a_model_written_outside_pkpd_is_read_checked_and_fitted(tmp_path):
    """Its DVID codes read the data, its priors file is checked against its parameters, and the
    fit's log density equals one written by hand from the model's equations (scipy-free: the
    closed forms of a one-compartment bolus and Emax)."""
    model = BolusEmax()
    (tmp_path / "p.toml").write_text(PRIORS)
    priors = pkpd.load_priors(tmp_path / "p.toml", model=model)
    times = [0.5, 2.0, 6.0]
    rows = []
    for i, dv in enumerate([(3800.0, 60.0), (3000.0, 50.0)]):
        rows.append(dict(ID=i + 1, TIME=0.0, EVID=1, AMT=100.0, DVID=0, DV="."))
        rows += [dict(ID=i + 1, TIME=t, EVID=0, AMT=0, DVID=k + 1, DV=dv[k] / (1 + t))
                 for t in times for k in (0, 1)]  # fmt: skip
    ds = pkpd.read_dataset(pd.DataFrame(rows), model=model)
    assert ds.endpoints == ("cp", "effect")
    spec = prepare(model, ds, priors)
    assert spec.estimated == ["cl", "v", "emax", "ec50"]
    nm = build_model(spec)
    from numpyro.infer.util import log_density

    obs = jnp.asarray(spec.obs_y)
    vals = {"pop_cl": 2.5, "pop_v": 25.0, "pop_emax": 70.0, "pop_ec50": 400.0,
            "omega_cl": 0.2, "z_cl": jnp.array([0.5, -1.0]),
            "sigma_prop_cp": 0.1, "sigma_add_effect": 4.0}  # fmt: skip
    ld, trace = log_density(nm, (), {"obs": obs}, vals)
    assert set(trace) >= set(vals)
    # by hand
    from scipy import stats

    lp = (
        stats.lognorm.logpdf(2.5, 0.5, scale=2.0)
        + stats.lognorm.logpdf(25.0, 0.5, scale=20.0)
        + stats.lognorm.logpdf(70.0, 0.3, scale=80.0)
        + stats.lognorm.logpdf(400.0, 0.5, scale=500.0)
        + stats.halfnorm.logpdf(0.2, scale=0.3)
        + stats.norm.logpdf([0.5, -1.0]).sum()
        + stats.halfnorm.logpdf(0.1, scale=0.2)
        + stats.halfnorm.logpdf(4.0, scale=5.0)
    )
    for i, z in enumerate([0.5, -1.0]):
        cl = 2.5 * np.exp(0.2 * z)
        for k, t in enumerate(times):
            cp = 1000 * 100 / 25.0 * np.exp(-cl / 25.0 * t)
            eff = 70.0 * cp / (400.0 + cp)
            y_cp, y_eff = rows[1 + 7 * i + 2 * k]["DV"], rows[2 + 7 * i + 2 * k]["DV"]
            lp += stats.norm.logpdf(y_cp, cp, 0.1 * cp) + stats.norm.logpdf(y_eff, eff, 4.0)
    np.testing.assert_allclose(float(ld), lp, rtol=1e-9)


def test_an_object_that_is_not_a_model_is_refused_by_name():
    with pytest.raises(FitError, match="dict is not a pkpd model: subclass pkpd.models.Model"):
        prepare({"name": "x"}, pd.DataFrame({"ID": [1], "TIME": [0.0], "DV": [1.0]}))


def test_a_registered_model_of_ones_own_is_simulated_by_name(tmp_path):
    """register() makes a fit of one's own model usable wherever pkpd finds models by name:
    its simulation (through predict: no modal form) gives the closed form of a bolus."""
    from pkpd.models import MODELS, register
    from pkpd.simulate.synthetic import fit_from_values

    model = BolusEmax()
    with pytest.raises(ValueError, match="bundled"):
        register(BolusEmax(name="one_cmt_iv"))
    register(model)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register(model)
        (tmp_path / "p.toml").write_text(PRIORS)
        rows = [dict(ID=1, TIME=0.0, EVID=1, AMT=100.0, DVID=0, DV=".")]
        rows += [dict(ID=1, TIME=t, EVID=0, AMT=0, DVID=1, DV=1000.0) for t in (1.0, 4.0)]
        f = fit_from_values(
            model, pd.DataFrame(rows), {"cl": 2.0, "v": 20.0, "emax": 80.0, "ec50": 500.0},
            priors=tmp_path / "p.toml", n_draws=2,
        )  # fmt: skip
        sim = pkpd.simulate(f, "100 mg once", n_subjects=2, n_draws=2, times=[0.5, 6.0],
                            progress_bar=False)  # fmt: skip
        cp = 1000 * 100 / 20.0 * np.exp(-2.0 / 20.0 * np.array([0.5, 6.0]))
        np.testing.assert_allclose(sim["cp"].values[0, 0, 0], cp, rtol=1e-9)
        np.testing.assert_allclose(
            sim["effect"].values[0, 0, 0], 80.0 * cp / (500.0 + cp), rtol=1e-9
        )
        assert "cmax_cp_c1" in sim and "cmax_effect_c1" not in sim
    finally:
        MODELS.pop(model.name, None)
