"""A model from its own equations (issue 20, first part): :class:`pkpd.models.ODEModel`.

Predictions against scipy's ``solve_ivp`` of the same equations (an independent integrator),
the definition checked when the model is made, and the model contract's parts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

import pkpd
from pkpd.models import ODEModel, check_model

from closed_forms import one_cmt_oral_conc

P = dict(ka=1.2, v=30.0, vmax=8.0, km=2.0, imax=0.9, ic50=1.5, kin=10.0, kout=0.2)
UNITS = {"ka": "1/h", "v": "L", "vmax": "mg/h", "km": "mg/L", "imax": "", "ic50": "mg/L",
         "kin": "U/h", "kout": "1/h"}  # fmt: skip


def rhs(t, y, p):
    conc = y["central"] / p["v"]  # mg/L
    inhibition = p["imax"] * conc / (p["ic50"] + conc)
    return {
        "depot": -p["ka"] * y["depot"],
        "central": p["ka"] * y["depot"] - p["vmax"] * conc / (p["km"] + conc),
        "response": p["kin"] * (1 - inhibition) - p["kout"] * y["response"],
    }


def observe(t, y, p):
    return {"cp": 1000 * y["central"] / p["v"], "marker": y["response"]}


def make(**kw):
    args = dict(
        name="mm_idr",
        states=("depot", "central", "response"),
        params=UNITS,
        outputs={"cp": "ng/mL", "marker": "U"},
        rhs=rhs,
        observe=observe,
        doses={1: "depot", 2: "central"},
        initial=lambda p: {"response": p["kin"] / p["kout"]},
        concentrations={"cp": "v"},
        codes={1: "cp", 2: "marker"},
    )
    args.update(kw)
    return ODEModel(**args)


TIMES = [0.5, 1, 2, 4, 8, 12, 13, 14, 15, 24, 36, 48]


def _data():
    """An oral dose (CMT 1) at 0 and a 2-h IV infusion of 100 mg (CMT 2, RATE 50) at 12 h."""
    rows = [dict(ID=1, TIME=0, EVID=1, AMT=200, CMT=1, RATE=0, DVID=".", DV="."),
            dict(ID=1, TIME=12, EVID=1, AMT=100, CMT=2, RATE=50, DVID=".", DV=".")]  # fmt: skip
    for t in TIMES:
        for code in (1, 2):
            rows.append(dict(ID=1, TIME=t, EVID=0, AMT=0, CMT=2, RATE=0, DVID=code, DV=1.0))
    return pd.DataFrame(rows).sort_values("TIME", kind="stable")


def _scipy_reference():
    def f(t, y):
        depot, central, response = y
        conc = central / P["v"]
        inhibition = P["imax"] * conc / (P["ic50"] + conc)
        infusion = 50.0 if 12 <= t < 14 else 0.0
        return [
            -P["ka"] * depot,
            P["ka"] * depot - P["vmax"] * conc / (P["km"] + conc) + infusion,
            P["kin"] * (1 - inhibition) - P["kout"] * response,
        ]

    y0 = [200.0, 0.0, P["kin"] / P["kout"]]
    kw = dict(method="LSODA", rtol=1e-11, atol=1e-12, dense_output=True)
    pieces = []
    for a, b in ((0, 12), (12, 14), (14, 48)):
        sol = solve_ivp(f, (a, b), y0, **kw)
        pieces.append((a, b, sol))
        y0 = sol.y[:, -1]

    def at(t):
        a, b, sol = next(p for p in pieces if p[0] <= t <= p[1])
        return sol.sol(t)

    return at


@pytest.mark.parametrize("solver", ["kvaerno5", "dopri5"])
def test_predictions_match_scipy_through_oral_and_infusion_doses(solver):
    model = make(solver=solver)
    ds = pkpd.read_dataset(_data(), model=model)
    pad = ds.to_arrays()
    subject = jax.tree.map(lambda x: jnp.asarray(x[0]), pad.data)
    out = jax.jit(model.predict)({k: jnp.asarray(v) for k, v in P.items()}, subject)
    assert bool(out["ok"])
    ref = _scipy_reference()
    mask = np.asarray(subject.point_mask, dtype=bool)
    pt = np.asarray(subject.point_time)[mask]
    cp = np.array([1000 * ref(t)[1] / P["v"] for t in pt])
    marker = np.array([ref(t)[2] for t in pt])
    np.testing.assert_allclose(np.asarray(out["cp"])[mask], cp, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["marker"])[mask], marker, rtol=1e-6)
    # the response starts at its baseline kin/kout and is inhibited: it falls below it
    assert marker.min() < 0.8 * P["kin"] / P["kout"]


@pytest.mark.parametrize("solver", ["kvaerno5", "dopri5"])
def test_the_gradient_matches_finite_differences(solver):
    model = make(solver=solver)
    pad = pkpd.read_dataset(_data(), model=model).to_arrays()
    subject = jax.tree.map(lambda x: jnp.asarray(x[0]), pad.data)

    def total(logp):
        p = {k: jnp.exp(v) for k, v in logp.items()}
        out = model.predict(p, subject)
        return jnp.sum(jnp.log(out["cp"][:10])) + jnp.sum(jnp.log(out["marker"][:10]))

    logp = {k: jnp.log(v) for k, v in P.items()}
    g = jax.jit(jax.grad(total))(logp)
    f = jax.jit(total)
    for k in ("ka", "vmax", "ic50", "kout", "kin", "v"):
        h = 1e-5
        up = dict(logp, **{k: logp[k] + h})
        dn = dict(logp, **{k: logp[k] - h})
        fd = (float(f(up)) - float(f(dn))) / (2 * h)
        assert float(g[k]) == pytest.approx(fd, rel=1e-4, abs=1e-6), k


def test_the_contract_parts():
    model = make()
    check_model(model)
    assert model.parameters == UNITS and model.endpoints == ("cp", "marker")
    assert model.endpoint_units == {"cp": "ng/mL", "marker": "U"}
    assert model.compartments == {1: "depot", 2: "central"}
    assert model.default_dose_compartment == 1
    assert model.endpoint_codes == {1: "cp", 2: "marker"}
    assert model.concentration_volumes == {"cp": "v"}
    only = model.with_endpoints(["marker"])
    assert only.endpoints == ("marker",) and only.concentration_endpoints == ()
    with pytest.raises(ValueError, match="unknown endpoint"):
        model.with_endpoints(["auc"])
    # a dose into a compartment the model does not have is named before any fit
    bad = _data().assign(CMT=lambda d: np.where(d.EVID == 1, 3, d.CMT))
    pad = pkpd.read_dataset(bad, model=model).to_arrays()
    (msg,) = model.check_subject(pad.data)
    assert "compartment(s) [3]" in msg and "CMT 1 (depot)" in msg


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(rhs=lambda t, y, p: {"depot": 0.0, "central": 0.0}), "rhs returns nothing for"),
        (dict(observe=lambda t, y, p: {"cp": y["central"], "auc": 0.0}), "observe returns"),
        (dict(doses={1: "gut"}), "goes to 'gut', which is not a state"),
        (dict(concentrations={"cp": "vc"}), "volume 'vc' of 'cp' is not a parameter"),
        (dict(params={k: u for k, u in UNITS.items() if k != "km"}), "'km'"),
        (dict(codes={1: "conc"}), "codes: 1 -> 'conc'"),
        (dict(params={**UNITS, "tlag": "h"}), "parameter(s) tlag are declared but rhs, observe"),
        (dict(initial=lambda p: {"effect": 1.0}), "initial must return"),
    ],
)
def test_a_wrong_definition_is_named_when_the_model_is_made(change, message):
    with pytest.raises(ValueError, match="ODEModel 'mm_idr'") as err:
        make(**change)
    assert message in str(err.value)


# -- fit and simulate ---------------------------------------------------------------------------
ONE_CMT_PRIORS = """
[model]
name = "test_ode_one_cmt_oral"

[parameters.cl]
unit = "L/h"
prior = { family = "lognormal", median = 5.0, sd_log = 0.5 }
bsv = { family = "halfnormal", scale = 0.3 }
source = "test"

[parameters.v]
unit = "L"
prior = { family = "lognormal", median = 50.0, sd_log = 0.5 }
bsv = { family = "halfnormal", scale = 0.3 }
source = "test"

[parameters.ka]
unit = "1/h"
prior = { family = "lognormal", median = 1.0, sd_log = 0.5 }
bsv = { family = "halfnormal", scale = 0.3 }
source = "test"

[residual.conc]
model = "proportional"
unit = "ng/mL"
proportional = { family = "halfnormal", scale = 0.2 }
source = "test"
"""


def _one_cmt_oral(solver):
    return ODEModel(
        name="test_ode_one_cmt_oral",
        states=("depot", "central"),
        params={"ka": "1/h", "cl": "L/h", "v": "L"},
        outputs={"conc": "ng/mL"},
        rhs=lambda t, y, p: {
            "depot": -p["ka"] * y["depot"],
            "central": p["ka"] * y["depot"] - p["cl"] / p["v"] * y["central"],
        },
        observe=lambda t, y, p: {"conc": 1000 * y["central"] / p["v"]},
        doses={1: "depot"},
        concentrations={"conc": "v"},
        solver=solver,
    )


def test_a_fit_of_an_ode_model_simulates_regimens_with_the_stiff_solver(tmp_path):
    """NUTS fits the model (non-stiff tsit5, the cheaper compile) and ``pkpd.simulate`` runs
    the same model with the default implicit kvaerno5 (re-registered under the fit's name);
    the simulated profiles equal the closed form with each virtual subject's parameters."""
    from pkpd.models import register

    register(_one_cmt_oral("tsit5"), replace=True)
    priors = tmp_path / "priors.toml"
    priors.write_text(ONE_CMT_PRIORS)
    rng = np.random.default_rng(1)
    rows = []
    for i in (1, 2, 3):
        ka, cl, v = 1.0 * np.exp(0.2 * rng.normal()), 5 * np.exp(0.2 * rng.normal()), 50.0
        rows.append(dict(ID=i, TIME=0.0, EVID=1, AMT=100.0, CMT=1, DV="."))
        for t in (0.5, 2.0, 6.0, 24.0):
            c = one_cmt_oral_conc(np.array([t]), [(0.0, 100.0)], ka, cl, v)[0]
            rows.append(dict(ID=i, TIME=t, EVID=0, AMT=0.0, CMT=2, DV=c * (1 + 0.1 * rng.normal())))
    # non-centred: the centring choice would compile the ODE objective a second time (~17 s)
    idata = pkpd.fit("test_ode_one_cmt_oral", pd.DataFrame(rows), priors, chains=2, warmup=5,
                     draws=5, seed=1, progress_bar=False, parameterization="noncentered")  # fmt: skip
    assert idata.posterior.sizes["chain"] == 2 and idata.posterior.sizes["draw"] == 5
    assert np.isfinite(idata.posterior["pop_cl"].values).all()

    register(_one_cmt_oral("kvaerno5"), replace=True)
    times = np.array([1.0, 6.0, 30.0, 55.0])
    sim = pkpd.simulate(idata, ["100 mg q24h x3"], n_subjects=3, n_draws=2, times=times,
                        seed=2, progress_bar=False)  # fmt: skip
    assert int(sim.solve_ok.sum()) == 6
    doses = [(0.0, 100.0), (24.0, 100.0), (48.0, 100.0)]
    for d in range(2):
        for s in range(3):
            ka, cl, v = (float(sim[f"param_{p}"][d, s]) for p in ("ka", "cl", "v"))
            want = one_cmt_oral_conc(times, doses, ka, cl, v)
            np.testing.assert_allclose(sim["conc"].values[0, d, s], want, rtol=1e-5)


def test_chains_of_an_ode_model_do_not_run_in_parallel_over_devices():
    """NumPyro's parallel chains (pmap, a shard_map in JAX 0.10) cannot differentiate diffrax's
    solve (measured: an ODEModel fit with 2 chains on 2 host devices failed with "Closure-
    converted function called with different dynamic arguments"; diffrax issue #765). The fit
    finds, from the log density's trace, that the model integrates an ODE and runs such
    chains in turn in one compiled program; a closed-form model keeps its parallel chains."""
    from pkpd.inference import fit as F

    ode = _one_cmt_oral("tsit5")
    closed = pkpd.models.load_model("one_cmt_oral")
    rows = [dict(ID=1, TIME=0.0, EVID=1, AMT=100.0, CMT=1, DV=".")]
    rows += [dict(ID=1, TIME=t, EVID=0, AMT=0.0, CMT=2, DV=1.0) for t in (1.0, 4.0)]
    pad = pkpd.read_dataset(pd.DataFrame(rows), model=ode).to_arrays()
    subj = jax.tree.map(lambda x: jnp.asarray(x[0]), pad.data)
    p = {"ka": jnp.asarray(1.0), "cl": jnp.asarray(5.0), "v": jnp.asarray(50.0)}

    def potential(model):
        return lambda q: jnp.sum(jnp.log(model.predict(q, subj)["conc"] + 1.0))

    assert F.calls_diffrax(potential(ode), p)
    assert not F.calls_diffrax(potential(closed), p)
    method, in_turn = F.chain_plan(2, potential(ode), p, devices=2)
    assert in_turn and method is F._compiled_chain_map
    assert F.chain_plan(2, potential(closed), p, devices=2) == ("parallel", False)
    # pkpd's own solver ("dopri5", no diffrax) differentiates under a shard_map: parallel
    own = _one_cmt_oral("dopri5")
    assert not F.calls_diffrax(potential(own), p)
    assert F.chain_plan(2, potential(own), p, devices=2) == ("parallel", False)
    # one device: the compiled map either way, nothing traced
    assert F.chain_plan(2, potential(ode), p, devices=1) == (F._compiled_chain_map, False)
