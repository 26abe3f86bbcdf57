"""Saturable blood binding: Langmuir inversion, linear limit, less-than-proportional exposure."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

import pkpd
from pkpd.models.temsirolimus import (
    MW_SIR,
    MW_TEM,
    TYPICAL,
    TemsirolimusModel,
    from_blocks,
    unbound_from_blood,
)

PK = {k: TYPICAL[k] for k in ("cl", "v1", "q", "v2", "fm", "cl_sir", "v_sir")}
# everolimus analogue (ter Heine 2018; priors/temsirolimus.toml medians), ng/mL
BIND = {"bmax": 1000.0, "kd": 90.0, "kns": 0.15}
MODEL = TemsirolimusModel(
    endpoints=("temsirolimus", "sirolimus"), binding=True, rtol=1e-9, atol=1e-9
)
predict = jax.jit(MODEL.predict)  # compiled once for the file's calls of one shape


def subject(dose, times):
    df = pd.DataFrame(
        {
            "ID": 1,
            "TIME": np.r_[0.0, times],
            "AMT": np.r_[dose, 0 * times],
            "DUR": np.r_[0.5, 0 * times],
        }
    )
    return jax.tree.map(lambda x: jnp.asarray(x[0]), pkpd.read_dataset(df).to_arrays().data)


def test_unbound_concentration_inverts_the_langmuir_relation():
    u = np.geomspace(1e-6, 1e5, 40)
    for bmax, kd, kns in [(1000.0, 90.0, 0.15), (1.0, 1e-3, 0.0), (1e5, 1e3, 2.0)]:
        c = (1 + kns) * u + bmax * u / (kd + u)
        np.testing.assert_allclose(np.asarray(unbound_from_blood(c, bmax, kd, kns)), u, rtol=1e-10)


def test_without_binding_capacity_it_is_the_linear_model():
    times = np.array([0.25, 0.5, 2.0, 24.0, 100.0])
    s = subject(25.0, times)
    a = predict({**PK, "bmax": 1e-9, "kd": 90.0, "kns": 0.15}, s)
    b = jax.jit(TemsirolimusModel(endpoints=("temsirolimus", "sirolimus")).predict)(PK, s)
    assert bool(a["ok"])
    for e in ("temsirolimus", "sirolimus"):
        np.testing.assert_allclose(np.asarray(a[e]), np.asarray(b[e]), rtol=1e-6)


@pytest.mark.parametrize("built", ["class", "blocks"])
def test_matches_scipy_with_an_independent_inversion(built):
    """The class and the model from blocks (``PK(binding=True)``) against scipy."""
    times = np.array([0.25, 0.5, 1.0, 4.0, 24.0, 72.0])
    if built == "class":
        out = predict({**PK, **BIND}, subject(175.0, times))
    else:
        blocks = from_blocks(binding=True).with_endpoints(["temsirolimus", "sirolimus"])
        assert blocks.engine == "ode" and {"bmax", "kd", "kns"} <= set(blocks.parameters)
        assert blocks.parameters["bmax"] == "ng/mL"
        out = jax.jit(blocks.predict)({**PK, **BIND}, subject(175.0, times))
        assert bool(out["ok"])
    p = {**PK, "bmax": BIND["bmax"] / 1000, "kd": BIND["kd"] / 1000, "kns": BIND["kns"]}
    r0 = 1 + p["kns"] + p["bmax"] / p["kd"]

    def rhs(t, y, rate):
        c = max(y[0], 0.0) / p["v1"]
        f = lambda x: (1 + p["kns"]) * x + p["bmax"] * x / (p["kd"] + x) - c  # noqa: E731
        u = 0.0 if c == 0 else brentq(f, 0.0, c, xtol=1e-16, rtol=1e-14)
        ce = r0 * u
        a2 = y[1] / p["v2"]
        return [rate - (p["cl"] + p["q"]) * ce + p["q"] * a2, p["q"] * ce - p["q"] * a2,
                p["fm"] * p["cl"] * ce * MW_SIR / MW_TEM - p["cl_sir"] / p["v_sir"] * y[2]]  # fmt: skip

    y1 = solve_ivp(rhs, (0, 0.5), [0, 0, 0], args=(350.0,), method="Radau", rtol=1e-11, atol=1e-14,
                   t_eval=times[times <= 0.5])  # fmt: skip
    y2 = solve_ivp(rhs, (0.5, 72), y1.y[:, -1], args=(0.0,), method="Radau", rtol=1e-11, atol=1e-14,
                   t_eval=times[times > 0.5])  # fmt: skip
    y = np.concatenate([y1.y, y2.y], axis=1)
    np.testing.assert_allclose(np.asarray(out["temsirolimus"]), 1000 * y[0] / p["v1"], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["sirolimus"]), 1000 * y[2] / p["v_sir"], rtol=1e-6)


def test_exposure_rises_less_than_proportionally_with_dose():
    # Torisel label (literature §1): whole-blood temsirolimus exposure less than dose-proportional.
    times = np.concatenate([np.linspace(0.05, 0.5, 10), np.geomspace(0.6, 400, 200)])
    auc_per_mg = []
    for dose in (1.0, 5.0, 25.0, 75.0):
        out = predict({**PK, **BIND}, subject(dose, times))  # one compile
        c = np.asarray(out["temsirolimus"])
        auc_per_mg.append(np.trapezoid(np.r_[0, c], np.r_[0, times]) / dose)
    assert np.all(np.diff(auc_per_mg) < 0), auc_per_mg
    assert auc_per_mg[-1] < 0.9 * auc_per_mg[0]


def test_binding_is_for_pk_endpoints_only():
    with pytest.raises(ValueError, match="PK endpoints"):
        TemsirolimusModel(binding=True)
    assert set(MODEL.parameters) >= {"bmax", "kd", "kns", "cl"}
