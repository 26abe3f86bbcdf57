"""Typical-subject simulation (``pkpd.simulate(..., typical=True)``): covariates at the effects'
references, every subject effect 0, no study effect: parameter uncertainty only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pkpd.simulate import SimulationError, fit_from_values, simulate

QUIET = dict(progress_bar=False)
TIMES = [0.0, 0.5, 1.0, 3.0, 8.0, 24.0]
DOSE = 100.0  # mg, one IV bolus


@pytest.fixture(scope="module")
def data(one_cmt_iv_design):
    """Ten subjects; WT 60..78 kg (median 69), AGE 30..75 (median 52.5), a 0/1 flag."""
    return one_cmt_iv_design(
        10,
        (1.0, 4.0, 12.0),
        covariates=lambda i: dict(WT=60.0 + 2 * i, AGE=30.0 + 5 * i, INH=float(i % 3 == 0)),
    )


def closed_form(cl, v, times):
    """ng/mL after one IV bolus of DOSE mg, one compartment; ``cl``, ``v`` per draw ``[D]``."""
    cl, v, t = np.asarray(cl)[:, None], np.asarray(v)[:, None], np.asarray(times)[None, :]
    return 1000.0 * DOSE / v * np.exp(-cl / v * t)


def pop_values(fit, sim, name):
    """The posterior's ``pop_<name>`` of each simulated draw (through ``posterior_index``)."""
    flat = fit.posterior[f"pop_{name}"].values.reshape(-1)
    return flat[sim["posterior_index"].values]


def test_typical_subject_is_the_population_value_of_each_draw(data):
    fit = fit_from_values(
        "one_cmt_iv",
        data,
        {"cl": 2.0, "v": 30.0},
        omega={"cl": 0.3, "v": 0.2},
        n_draws=12,
        uncertainty=0.1,
        seed=5,
    )
    for engine in ("modal", "predict"):
        sim = simulate(
            fit, f"{DOSE:g} mg once", typical=True, n_draws=8, times=TIMES, engine=engine, **QUIET
        )
        assert sim.sizes["subject"] == 1 and sim.sizes["draw"] == 8
        assert sim.attrs["typical"] == 1
        cl, v = pop_values(fit, sim, "cl"), pop_values(fit, sim, "v")
        assert np.ptp(cl) > 0  # the draws differ: parameter uncertainty is kept
        np.testing.assert_allclose(sim["param_cl"].values[:, 0], cl, rtol=1e-12)
        np.testing.assert_allclose(sim["param_v"].values[:, 0], v, rtol=1e-12)
        np.testing.assert_allclose(
            sim["conc"].values[0, :, 0, :], closed_form(cl, v, TIMES), rtol=1e-9
        )
    # an ordinary simulation of the same fit has between-subject variability
    plain = simulate(fit, f"{DOSE:g} mg once", n_subjects=1, n_draws=8, times=TIMES, **QUIET)
    assert plain.attrs["typical"] == 0
    assert not np.allclose(plain["param_cl"].values[:, 0], cl, rtol=1e-3)
    # typical means one subject
    for n in (5, 2, 0):
        with pytest.raises(SimulationError, match="typical"):
            simulate(fit, "100 mg once", typical=True, n_subjects=n, n_draws=2, **QUIET)
    sim = simulate(fit, "100 mg once", typical=True, n_subjects=1, n_draws=2, times=[], **QUIET)
    assert sim.sizes["subject"] == 1


def test_typical_subject_has_the_effects_reference_covariates(data):
    fit = fit_from_values(
        "one_cmt_iv",
        data,
        {"cl": 2.0, "v": 30.0},
        omega={"cl": 0.3, "v": 0.2},
        covariates=["cl~WT power(ref=70)", "v~INH categorical"],
        effects={"cl_wt": 0.75, "v_inh": 1.5},
        n_draws=10,
        uncertainty=0.1,
        seed=7,
    )
    sim = simulate(fit, f"{DOSE:g} mg once", typical=True, n_draws=6, times=TIMES, **QUIET)
    # WT at the reference 70 (not the data's median 69), the flag 0, AGE (no effect) at its median
    assert float(sim["cov_WT"][0]) == 70.0
    assert float(sim["cov_INH"][0]) == 0.0
    assert float(sim["cov_AGE"][0]) == 52.5
    cl, v = pop_values(fit, sim, "cl"), pop_values(fit, sim, "v")
    np.testing.assert_allclose(sim["conc"].values[0, :, 0, :], closed_form(cl, v, TIMES), rtol=1e-9)
    # a population mapping sets the typical subject's covariates: WT 80 kg, flag on
    sim = simulate(
        fit,
        f"{DOSE:g} mg once",
        typical=True,
        population={"wt": 80.0, "INH": 1},
        n_draws=6,
        times=TIMES,
        **QUIET,
    )
    assert sim.sizes["subject"] == 1 and float(sim["cov_WT"][0]) == 80.0
    cl_80, v_inh = cl * (80.0 / 70.0) ** 0.75, v * 1.5
    np.testing.assert_allclose(
        sim["conc"].values[0, :, 0, :], closed_form(cl_80, v_inh, TIMES), rtol=1e-9
    )
    # a table must be one subject
    with pytest.raises(SimulationError, match="one"):
        simulate(
            fit,
            "100 mg once",
            typical=True,
            population=pd.DataFrame({"WT": [70.0, 80.0], "INH": [0.0, 0.0]}),
            n_draws=2,
            **QUIET,
        )


def test_conflicting_references_ask_for_the_covariate(data):
    fit = fit_from_values(
        "one_cmt_iv",
        data,
        {"cl": 2.0, "v": 30.0},
        covariates=["cl~WT power(ref=70)", "v~WT power(ref=60)"],
        n_draws=2,
    )
    with pytest.raises(SimulationError, match="different reference"):
        simulate(fit, "100 mg once", typical=True, n_draws=2, times=[], **QUIET)
    sim = simulate(
        fit, "100 mg once", typical=True, population={"WT": 65}, n_draws=2, times=[], **QUIET
    )
    assert float(sim["cov_WT"][0]) == 65.0
