"""The quick fit (``method="map"``): population mode with the subject effects integrated out.

Against simulation truth (one-compartment oral, closed form computed here with numpy,
independent of pkpd's models): the typical values, between-subject SDs, residual SD and the
direction of a covariate effect are recovered, where the joint mode over population values
and subject effects (what ``method="map"`` returned before issue 27) inflates the
between-subject SDs several-fold; sparse data (3 samples per subject) give a finite estimate
with SDs neither collapsed nor inflated; a parameter the data do not inform is reported
(flat or prior-dominated) and not given an invented unit variance. The objective's pieces are
checked against NumPyro's potential energy.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.inference import fit as F

TRUTH = {"cl": 4.0, "v": 40.0, "ka": 1.2, "omega_cl": 0.3, "omega_v": 0.25, "prop": 0.1, "wt": 0.75}
RICH = (0.5, 1, 2, 3, 4, 6, 8, 12, 24)

PRIORS = """
[model]
name = "one_cmt_oral"

[parameters.cl]
unit = "L/h"
prior = { family = "lognormal", median = 5.0, sd_log = 2.0 }
bsv = { family = "halfnormal", scale = 0.5 }

[parameters.v]
unit = "L"
prior = { family = "lognormal", median = 50.0, sd_log = 2.0 }
bsv = { family = "halfnormal", scale = 0.5 }

[parameters.ka]
unit = "1/h"
prior = { family = "lognormal", median = 1.0, sd_log = 1.5 }

[residual.conc]
model = "proportional"
unit = "ng/mL"
proportional = { family = "halfnormal", scale = 0.3 }
"""

#: Covariate effects of the fits: weight on CL (estimated; truth 0.75), and two effects the
#: data cannot inform (their columns are constant at the reference / 0 for every subject):
#: one with a practically flat prior (SD 1000), one with a proper prior (SD 0.5 on log).
COVARIATES = [
    "cl~WT power(ref=70)",
    "v~ONE power(ref=1, prior=normal(0, 1000))",
    "v~NONE categorical",
]


def simulate(n=40, times=RICH, *, seed=1, random_times=0, dose=100.0):
    """One-compartment oral trial from :data:`TRUTH` (closed form, numpy), one dose each.

    ``random_times > 0``: that many sampling times per subject drawn from ``times``.
    """
    rng = np.random.default_rng(seed)
    wt = rng.uniform(45.0, 110.0, n)
    eta = rng.normal(size=(n, 2)) * [TRUTH["omega_cl"], TRUTH["omega_v"]]
    rows = []
    for i in range(n):
        cl = TRUTH["cl"] * (wt[i] / 70.0) ** TRUTH["wt"] * np.exp(eta[i, 0])
        v = TRUTH["v"] * np.exp(eta[i, 1])
        ka, k = TRUTH["ka"], cl / v
        ts = np.sort(rng.choice(times, random_times, replace=False)) if random_times else times
        base = dict(ID=i + 1, WT=round(float(wt[i]), 2), ONE=1.0, NONE=0)
        rows.append(dict(base, TIME=0.0, EVID=1, AMT=dose, DV=np.nan))
        for t in ts:
            c = 1000.0 * dose * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))  # ng/mL
            y = c * (1.0 + TRUTH["prop"] * rng.normal())
            rows.append(dict(base, TIME=float(t), EVID=0, AMT=0.0, DV=y))
    return pd.DataFrame(rows), eta


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    p = tmp_path_factory.mktemp("quick") / "priors.toml"
    p.write_text(PRIORS)
    return p


@pytest.fixture(scope="module")
def rich(priors):
    df, eta = simulate()
    idata = pkpd.fit(
        "one_cmt_oral",
        df,
        priors,
        method="map",
        draws=400,
        seed=4,
        covariates=COVARIATES,
        progress_bar=False,
    )
    return df, eta, idata


def _median(idata, name):
    return float(np.median(idata.posterior[name].values))


def test_map_recovers_the_simulation_truth(rich):
    _, _, idata = rich
    for p in ("cl", "v", "ka"):  # typical values within 10%
        assert _median(idata, f"pop_{p}") == pytest.approx(TRUTH[p], rel=0.10), p
    # between-subject SDs within 35%: with 40 subjects the standard error of an SD estimate is
    # about omega / sqrt(2 * 40) = 11%, and the SD of the 40 simulated effects itself differs
    # from omega by about as much: 35% is about three combined standard errors
    for p in ("cl", "v"):
        assert _median(idata, f"omega_{p}") == pytest.approx(TRUTH[f"omega_{p}"], rel=0.35), p
    # residual SD within 20%: 360 observations, SE ~4%, plus what the subject fits absorb
    assert _median(idata, "sigma_prop_conc") == pytest.approx(TRUTH["prop"], rel=0.20)
    # the weight effect has the right sign (and a plausible size)
    beta = idata.posterior["beta_cl_wt"].values
    assert np.quantile(beta, 0.05) > 0 and 0.3 < np.median(beta) < 1.2
    assert idata.attrs["map_kind"] == "laplace_marginal"
    assert idata.attrs["map_converged"] == 1


def test_old_joint_mode_was_far_off_on_the_same_data(rich, priors):
    """The joint mode over population values and subject effects (``method="map"`` before
    issue 27, still NUTS's start) on the same data: between-subject SDs badly off."""
    df, _, idata = rich
    spec = F.prepare("one_cmt_oral", df, priors, covariates=COVARIATES)
    nm = F.build_model(spec)
    obs = jnp.asarray(spec.obs_y)
    x0, objective = F._valid_start(nm, obs, jax.random.PRNGKey(0))
    x, _ = F._map_estimate(objective, x0, max_iter=2000)
    u = objective.unravel(jnp.asarray(x))
    for p in ("cl", "v"):
        joint = float(np.exp(u[f"omega_{p}"]))  # halfnormal: log transform
        new = _median(idata, f"omega_{p}")
        true = TRUTH[f"omega_{p}"]
        assert abs(np.log(joint / true)) > np.log(1.5), (p, joint)  # off by more than 50%
        assert abs(np.log(new / true)) < abs(np.log(joint / true)) / 2, (p, new, joint)


def test_uninformed_parameters_are_reported_not_given_unit_variance(rich):
    _, _, idata = rich
    flat = json.loads(idata.attrs["laplace_flat_parameters"])
    prior_dominated = json.loads(idata.attrs["laplace_prior_dominated"])
    sd = json.loads(idata.attrs["laplace_sd"])
    # prior SD 1000, no data: a flat direction, held at the mode in the draws (no unit SD)
    assert flat == ["beta_v_one"] and idata.attrs["laplace_flat_directions"] == 1
    assert sd["beta_v_one"] is None
    assert np.std(idata.posterior["beta_v_one"].values) < 1e-6
    # a proper prior and no data: the prior's SD (0.5 on the log scale), reported as such
    assert "beta_v_none" in prior_dominated
    assert sd["beta_v_none"] == pytest.approx(0.5, rel=0.05)
    # the informed values are neither flat nor prior-dominated
    for name in ("pop_cl", "pop_v", "omega_cl", "omega_v", "beta_cl_wt", "sigma_prop_conc"):
        assert name not in flat and name not in prior_dominated, name
        assert 0 < sd[name] < 0.5, name
    # the draws follow the reported SDs (log scale)
    draws_sd = np.std(np.log(idata.posterior["pop_cl"].values))
    assert draws_sd == pytest.approx(sd["pop_cl"], rel=0.2)


def test_sparse_data_stay_finite_and_keep_their_spread(priors):
    df, _ = simulate(40, seed=5, random_times=3)
    idata = pkpd.fit(
        "one_cmt_oral",
        df,
        priors,
        method="map",
        draws=100,
        seed=2,
        covariates=["cl~WT power(ref=70)"],
        progress_bar=False,
    )
    for name in ("pop_cl", "pop_v", "pop_ka", "omega_cl", "omega_v", "sigma_prop_conc"):
        assert np.all(np.isfinite(idata.posterior[name].values)), name
    for p in ("cl", "v"):
        om = _median(idata, f"omega_{p}")
        assert TRUTH[f"omega_{p}"] / 3 < om < 3 * TRUTH[f"omega_{p}"], (p, om)
    for p in ("cl", "v"):
        assert _median(idata, f"pop_{p}") == pytest.approx(TRUTH[p], rel=0.25), p


def test_objective_pieces_match_numpyro(priors):
    """The potential energy of (population values, subject effects) equals NumPyro's, and
    splits into the population prior part and one term per subject."""
    from numpyro.infer.util import potential_energy

    from pkpd.inference.laplace import LaplaceProblem

    df, _ = simulate(6, seed=3)
    spec = F.prepare("one_cmt_oral", df, priors)
    nm = F.build_model(spec)
    obs = jnp.asarray(spec.obs_y)
    x0, objective = F._valid_start(nm, obs, jax.random.PRNGKey(0))
    u = objective.unravel(jnp.asarray(x0))
    rng = np.random.default_rng(0)
    u = {k: v + 0.3 * rng.normal(size=np.shape(v)) for k, v in u.items()}
    prob = LaplaceProblem(
        nm, obs, u, spec.obs_subject, F._population_sites(nm, obs), spec.n_subjects
    )
    theta = jax.flatten_util.ravel_pytree({k: u[k] for k in prob.pop_sites})[0]
    Z = jnp.stack([jnp.asarray(u[k]) for k in prob.subj_sites], axis=1)
    U, per, prior = prob.terms(theta, Z)
    want = potential_energy(nm, (), {"obs": obs}, u)
    np.testing.assert_allclose(float(U), float(want), rtol=1e-12)
    np.testing.assert_allclose(float(jnp.sum(per) + prior), float(want), rtol=1e-12)
    # each subject's term depends on its own effects only
    Z2 = Z.at[2].add(0.5)
    per2 = prob.terms(theta, Z2)[1]
    changed = np.flatnonzero(np.abs(np.asarray(per2 - per)) > 0)
    assert changed.tolist() == [2]
