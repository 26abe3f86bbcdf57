"""Priors files: the bundled ones load; every mistake is named with its entry and fix."""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st

import pkpd
from pkpd.inference.priors import Dist, PriorsError, load_priors
from pkpd.models import Model

from paths import ROOT

PRIORS = ROOT / "priors"
GENERIC = [
    "one_cmt_iv",
    "one_cmt_oral",
    "two_cmt_iv",
    "two_cmt_oral",
    "three_cmt_iv",
    "three_cmt_oral",
]


@pytest.mark.parametrize("name", GENERIC + ["temsirolimus"])
def test_bundled_priors_load_and_cite_sources(name):
    p = load_priors(PRIORS / f"{name}.toml")
    assert p.model == name
    assert p.parameters and p.residuals
    for entry in [*p.parameters.values(), *p.covariates.values(), *p.residuals.values()]:
        assert entry.unit, entry
        assert entry.source, f"{name}: {entry} has no source"


def test_temsirolimus_priors_cover_the_joint_model():
    p = load_priors(PRIORS / "temsirolimus.toml")
    assert set(p.residuals) == {"temsirolimus", "sirolimus", "s6k", "vegf", "pd1_cd8"}
    assert {c.covariate for c in p.covariates.values()} == {
        "BSA",
        "HCT",
        "CYP3A4_INH",
        "CYP3A4_IND",
    }
    # literature anchors (literature file §1, §7)
    assert p.parameters["cl"].prior.params["median"] == 16.0
    assert p.parameters["v1"].prior.params["median"] == 35.0
    assert p.parameters["pd1_base"].multiplier == 100.0
    assert p.parameters["pd1_base"].prior.params["median"] == pytest.approx(0.168)


@dataclass(frozen=True)
class Described(Model):
    """A model that only describes itself (priors are checked against the contract)."""

    name: str
    units: tuple
    required: tuple = ()

    @property
    def parameters(self):
        return dict(self.units)

    @property
    def structural_parameters(self):
        return self.required or tuple(self.parameters)

    @property
    def endpoint_units(self):
        return {"conc": "ng/mL"}

    @property
    def compartments(self):
        return {1: "central"}

    def predict(self, params, subject):  # pragma: no cover - never called here
        raise NotImplementedError


def test_default_priors_by_model_name():
    p = load_priors(
        model=Described(
            "two_cmt_oral",
            (("cl", "L/h"), ("v1", "L"), ("q", "L/h"), ("v2", "L"), ("ka", "1/h")),
        )
    )
    assert set(p.parameters) == {"cl", "v1", "q", "v2", "ka"}


# lag_depot is optional (outside the structural parameters)
MODEL = Described(
    "one_cmt_oral",
    (("cl", "L/h"), ("v", "L"), ("ka", "1/h"), ("lag_depot", "h")),
    required=("cl", "v", "ka"),
)


def _write(tmp_path, text):
    f = tmp_path / "p.toml"
    f.write_text(text)
    return f


GOOD = """
[parameters.cl]
unit = "L/h"
prior = { family = "lognormal", median = 2.0, sd_log = 0.5 }
[parameters.v]
unit = "L"
prior = { family = "lognormal", median = 20.0, sd_log = 0.5 }
[parameters.ka]
unit = "1/h"
prior = { family = "lognormal", median = 1.0, sd_log = 0.5 }
"""


def test_good_file_with_model(tmp_path):
    p = load_priors(_write(tmp_path, GOOD), model=MODEL)
    assert set(p.parameters) == {"cl", "v", "ka"}


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (
            ("[parameters.ka]", "[parameters.kaa]"),
            [
                "[parameters.kaa]",
                "unknown parameter 'kaa'",
                "did you mean 'ka'",
                "[parameters.ka]",
                "has no prior",
            ],
        ),
        (
            ('family = "lognormal", median = 20.0', 'family = "lognormall", median = 20.0'),
            ["[parameters.v]", "unknown family 'lognormall'", "did you mean 'lognormal'"],
        ),
        (
            ("sd_log = 0.5 }\n[parameters.v]", "sd_log = -0.5 }\n[parameters.v]"),
            ["[parameters.cl]", "sd_log = -0.5 must be > 0"],
        ),
        (('unit = "L"\n', ""), ["[parameters.v]", "missing unit", 'the model uses "L"']),
        (
            ('unit = "L/h"', 'unit = "mL/min"'),
            ["[parameters.cl]", "'mL/min' is not the model's unit 'L/h'"],
        ),
        (
            (
                'family = "lognormal", median = 1.0, sd_log = 0.5',
                'family = "normal", mean = 1.0, sd = 0.5',
            ),
            ["[parameters.ka]", "does not match a positive"],
        ),
        (
            ("median = 2.0, sd_log = 0.5", "median = 2.0"),
            ["[parameters.cl]", "needs a number sd_log"],
        ),
        (
            ("median = 2.0, sd_log = 0.5", "median = 2.0, sd_log = 0.5, shape = 3"),
            ["[parameters.cl]", "has no parameter 'shape'"],
        ),
    ],
)
def test_each_mistake_is_named_with_entry_and_fix(tmp_path, edit, fragments):
    text = GOOD.replace(*edit)
    assert text != GOOD
    f = _write(tmp_path, text)
    with pytest.raises(PriorsError) as info:
        load_priors(f, model=MODEL)
    msg = str(info.value)
    assert str(f) in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_all_mistakes_reported_at_once(tmp_path):
    text = GOOD.replace('family = "lognormal", median = 20.0', 'family = "gamma", median = 20.0')
    text = text.replace("sd_log = 0.5 }\n[parameters.v]", "sd_log = 0 }\n[parameters.v]")
    text += '\n[residual.conc]\nmodel = "combined"\nunit = "ng/mL"\nproportional = { family = "halfnormal", scale = 0.2 }\n'
    text += '\n[covariates.cl_wt]\nparameter = "cl"\ncovariate = "WT"\nform = "power"\nunit = "kg"\nprior = { family = "normal", mean = 0.75, sd = 0.1 }\n'
    with pytest.raises(PriorsError) as info:
        load_priors(_write(tmp_path, text), model=MODEL)
    probs = info.value.problems
    assert len(probs) == 4, probs
    joined = "\n".join(probs)
    for frag in [
        "unknown family 'gamma'",
        "sd_log = 0 must be > 0",
        "needs a prior for 'additive'",
        "needs a numeric reference",
    ]:
        assert frag in joined


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(PriorsError, match="not valid TOML"):
        load_priors(_write(tmp_path, "[parameters.cl\nunit="))
    with pytest.raises(PriorsError, match="file not found"):
        load_priors(tmp_path / "nope.toml")


def test_optional_entries_ignored_by_models_without_them(tmp_path):
    text = (
        GOOD
        + '\n[parameters.bmax]\nunit = "ng/mL"\noptional = true\nprior = { family = "lognormal", median = 1000.0, sd_log = 0.7 }\n'
    )
    p = load_priors(_write(tmp_path, text), model=MODEL)
    assert p.ignored == ("bmax",) and "bmax" not in p.parameters


@pytest.mark.parametrize(
    "dist, ref",
    [
        (Dist("normal", {"mean": 1.0, "sd": 2.0}), st.norm(1.0, 2.0)),
        (Dist("lognormal", {"median": 16.0, "sd_log": 0.25}), st.lognorm(s=0.25, scale=16.0)),
        (Dist("halfnormal", {"scale": 0.3}), st.halfnorm(scale=0.3)),
        (Dist("halfcauchy", {"scale": 0.3}), st.halfcauchy(scale=0.3)),
        (Dist("exponential", {"rate": 2.0}), st.expon(scale=0.5)),
        (Dist("beta", {"a": 3.5, "b": 6.5}), st.beta(3.5, 6.5)),
        (Dist("uniform", {"low": 0.2, "high": 3.0}), st.uniform(0.2, 2.8)),
    ],
)
def test_distributions_match_scipy(dist, ref):
    x = np.asarray(ref.ppf([0.05, 0.3, 0.5, 0.9]))
    got = np.asarray(dist.numpyro().log_prob(jnp.asarray(x)))
    np.testing.assert_allclose(got, ref.logpdf(x), rtol=1e-10)
    # quantiles (and so the median behind Priors.typical) agree with scipy's
    q = [0.05, 0.3, 0.5, 0.9]
    np.testing.assert_allclose([dist.quantile(v) for v in q], ref.ppf(q), rtol=1e-9)
    assert dist.median() == pytest.approx(float(ref.median()), rel=1e-9)


def test_logitnormal_quantiles():
    d = Dist("logitnormal", {"median": 0.168, "sd_logit": 0.5})
    z = st.norm.ppf(0.9)
    want = 1 / (1 + math.exp(-(math.log(0.168 / 0.832) + 0.5 * z)))
    assert d.quantile(0.9) == pytest.approx(want, rel=1e-12) and d.median() == pytest.approx(0.168)


def test_priors_typical_values_and_the_models_agree_or_say_why():
    from pkpd.models.temsirolimus import PRIOR_CENTRE_DIFFERENCES, TYPICAL

    priors = load_priors(model="temsirolimus")
    typical = priors.typical()
    # by hand from priors/temsirolimus.toml: lognormal medians, Beta(4, 1.5)'s median, and the
    # logit-normal PD-1 baseline's median 0.168 on the fraction scale, times 100 (%)
    assert typical["cl"] == 16.0 and typical["v2"] == 135.0
    assert typical["s6k_imax"] == pytest.approx(st.beta(4.0, 1.5).median(), rel=1e-12)
    assert typical["pd1_base"] == pytest.approx(16.8, rel=1e-12)
    assert priors.typical_effects()["cl_bsa"] == pytest.approx(0.75)
    assert set(typical) == set(TYPICAL)
    for name, value in TYPICAL.items():
        p = priors.parameters[name]
        gap = abs(math.log(value / typical[name]))
        if name in PRIOR_CENTRE_DIFFERENCES:
            assert gap > 0.05, f"{name}: listed as different but within 5% of the prior's median"
        else:
            assert gap <= 0.05, f"{name}: {value} vs prior median {typical[name]}, undocumented"
        lo, hi = (p.prior.quantile(q) * p.multiplier for q in (0.05, 0.95))
        assert lo <= value <= hi or p.prior.is_fixed, f"{name} outside its prior's central 90%"


def test_logitnormal_matches_change_of_variables():
    d = Dist("logitnormal", {"median": 0.168, "sd_logit": 0.5})
    x = np.array([0.05, 0.168, 0.4])
    logit = np.log(x / (1 - x))
    want = st.norm(math.log(0.168 / 0.832), 0.5).logpdf(logit) - np.log(x * (1 - x))
    np.testing.assert_allclose(np.asarray(d.numpyro().log_prob(jnp.asarray(x))), want, rtol=1e-10)


def test_top_level_export():
    assert pkpd.load_priors is load_priors
