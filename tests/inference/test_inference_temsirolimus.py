"""Parameter recovery of the joint temsirolimus PK/PD model on the bundled 40-subject, 4-study data.

The data are synthetic (datasets/temsirolimus/generate.py), so the truth is known
(truth.json). Population values in the fit are typical values at the covariate references with
the study effects averaged in, so a study-to-study spread of ~0.1-0.2 on the log scale
(truth.json ``study_eta``) separates them from the generating typical values; the check is
that most 90% credible intervals cover the truth.
"""

from __future__ import annotations

import numpy as np
import pytest

import pkpd

from paths import ROOT

PK = ["cl", "v1", "q", "v2", "cl_sir", "v_sir"]
PD = ["potency", "s6k_imax", "s6k_ic50", "s6k_hill", "s6k_ke0", "vegf_base", "vegf_mrt",
      "vegf_imax", "vegf_ic50", "pd1_base", "pd1_kout", "pd1_imax", "pd1_ic50"]  # fmt: skip


@pytest.fixture(scope="module")
def pk_fit():
    """One joint fit of every endpoint (PK, S6K, VEGF, PD-1) serves the PK and PD checks."""
    ds, truth = pkpd.datasets.load("temsirolimus_small")
    idata = pkpd.fit(
        "temsirolimus", ds, chains=2, warmup=150, draws=150, seed=1, progress_bar=False
    )
    return idata, truth


def test_pk_population_values_are_recovered(pk_fit):
    idata, truth = pk_fit
    post = idata.posterior
    covered = {}
    for p in PK:
        lo, hi = np.quantile(post[f"pop_{p}"].values, [0.05, 0.95])
        covered[p] = bool(lo <= truth["typical"][p] <= hi)
        # and never far off: within 20% of the truth (with the same seed, q's median passed
        # within 15% on one machine and sat 15.1% above its 8.7 L/h on another, 2026-12-07:
        # XLA's CPU code, and so the chains, differ between processors)
        assert abs(np.median(post[f"pop_{p}"].values) / truth["typical"][p] - 1) < 0.2, p
    # measured (seed 1): 4-5 of 6 cover; cl sits at the edge
    assert sum(covered.values()) >= 4, covered
    ss = idata.sample_stats
    assert float(ss["diverging"].mean()) <= 0.02
    assert int(ss["tree_depth"].max()) <= 9  # no saturated trees (the limit is 10)


def test_pd_population_values_are_recovered(pk_fit):
    """S6K, VEGF and PD-1 population values against the synthetic truth (truth.json).

    Measured (seed 1, 2 x (200 + 200), benchmarks/RESULTS.md 2026-12-03): all 13 PD 90%
    intervals cover the truth; the S6K Imax, which 63 S6K samples pin, within 1%. With these
    shorter chains at least 11 of 13 must cover. The VEGF baseline is the typical value with the
    two VEGF studies' effects averaged in, so it may sit ~20% from the generating value.
    """
    idata, truth = pk_fit
    post = idata.posterior
    covered = {}
    for p in PD:
        v = post[f"pop_{p}"].values
        lo, hi = np.quantile(v, [0.05, 0.95])
        covered[p] = bool(lo <= truth["typical"][p] <= hi)
    assert sum(covered.values()) >= 11, covered
    for p, rel in (("s6k_imax", 0.05), ("pd1_base", 0.25), ("vegf_base", 0.3), ("pd1_imax", 0.5)):
        med = float(np.median(post[f"pop_{p}"].values))
        assert abs(med / truth["typical"][p] - 1) < rel, (p, med, truth["typical"][p])


def test_a_parameter_with_study_effects_is_sampled_through_the_informed_studies_mean():
    """Each parameter with between-study effects (the bundled priors: cl, cl_sir, vegf_base,
    pd1_base) is sampled through the mean value of the studies with data on the endpoints it
    acts on, read here from the CSV (DVID 1-5: temsirolimus, sirolimus, S6K, VEGF, PD-1;
    datasets/temsirolimus/generate.py): PK parameters every study, VEGF's baseline the VEGF
    studies, PD-1's the one PD-1 study. Sampling ā = T(pop) + ω mean(z_s) instead of T(pop)
    is a shift (Jacobian 1): the chain potential equals the plain model's at the same point,
    and the population, study and individual values agree."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import pandas as pd
    from numpyro.infer.initialization import init_to_median
    from numpyro.infer.util import constrain_fn, potential_energy

    from pkpd.inference import fit as F

    path = ROOT / "datasets/temsirolimus/temsirolimus_small.csv"
    csv = pd.read_csv(path, comment="#", na_values=".")
    spec = F.prepare("temsirolimus", path)
    studies = list(spec.padded.studies)

    def where(dvids):
        return tuple(sorted(studies.index(s) for s in set(csv.loc[csv.DVID.isin(dvids), "STUDY"])))

    expected = {
        "cl": where([1, 2, 3, 4, 5]),
        "cl_sir": where([1, 2, 3, 4, 5]),
        "vegf_base": where([4]),
        "pd1_base": where([5]),
    }
    assert len(expected["pd1_base"]) == 1 and len(expected["vegf_base"]) == 2
    anchors = F._choose_anchors(spec)
    assert anchors == expected
    obs = jnp.asarray(np.where(spec.obs_blq, np.nan_to_num(spec.obs_lloq, nan=1.0), spec.obs_y))
    nm0 = F.build_model(dataclasses.replace(spec, parameterization="noncentered"))
    # the prior medians as a start (_valid_start would also compile the objective's gradient)
    u = F._init_function(nm0, obs, init_to_median(num_samples=15))(jax.random.PRNGKey(0))
    z = np.array([0.3, -1.2, 0.5, 1.7])
    for p in anchors:
        u[f"z_study_{p}"] = jnp.asarray(z)
        u[f"omega_study_{p}"] = jnp.log(0.4)  # unconstrained: log ω
    spec.anchors = anchors
    nm = F.build_model(spec)
    ua = F._centered_start(spec, nm, nm0, obs, u)
    sampled = {f"pop_{p}" for p in ("cl", "cl_sir", "vegf_base")} | {"pop_pd1_base_fraction"}
    assert set(ua) ^ set(u) == sampled | {f"pop_{p}_anchor" for p in anchors}
    # NumPyro's unconstrained value of pd1_base's fraction is its logit
    logit = float(u["pop_pd1_base_fraction"])
    np.testing.assert_allclose(
        float(ua["pop_pd1_base_anchor"]), logit + 0.4 * z[list(anchors["pd1_base"])].mean()
    )

    @jax.jit  # one compiled program: op by op, the two evaluations took 66 s alone
    def both(u, ua):
        kw = {"obs": obs}
        return (
            potential_energy(nm0, (), kw, u),
            potential_energy(nm, (), kw, ua),
            constrain_fn(nm0, (), kw, u, return_deterministic=True),
            constrain_fn(nm, (), kw, ua, return_deterministic=True),
        )

    pe0, pe1, a, b = both(u, ua)
    assert np.isfinite(float(pe0))
    np.testing.assert_allclose(float(pe1), float(pe0), rtol=0, atol=1e-8)
    for p in anchors:
        for k in (f"pop_{p}", f"eta_study_{p}", f"theta_{p}"):
            np.testing.assert_allclose(np.asarray(b[k]), np.asarray(a[k]), rtol=1e-12, err_msg=k)
