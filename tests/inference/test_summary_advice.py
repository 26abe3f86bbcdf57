"""Convergence warnings say which parameters' subject-effect parameterisation to change."""

from __future__ import annotations

import json

import arviz as az
import numpy as np

from pkpd.inference.summary import convergence_warnings, parameterization_advice


def _idata(shift_cl: float, divergent: int = 0, how: str = "auto"):
    rng = np.random.default_rng(0)
    n = 500
    post = {
        # two chains that disagree on pop_cl/omega_cl (R-hat >> 1.01) when shift_cl > 0
        "pop_cl": rng.normal(0, 1, (2, n)) + np.array([[0.0], [shift_cl]]),
        "omega_cl": np.abs(rng.normal(0.3, 0.05, (2, n))) + np.array([[0.0], [shift_cl]]),
        "pop_v": rng.normal(0, 1, (2, n)),
        "omega_v": np.abs(rng.normal(0.3, 0.05, (2, n))),
    }
    div = np.zeros((2, n), bool)
    div.flat[:divergent] = True
    idata = az.from_dict(posterior=post, sample_stats={"diverging": div})
    idata.attrs.update(
        centered_subjects=json.dumps({"cl": 12, "v": 0}), parameterization=how, model="m"
    )
    return idata


def test_a_poorly_mixing_centred_parameter_is_named():
    warnings = convergence_warnings(_idata(3.0))
    assert any("R-hat" in w and "pop_cl" in w for w in warnings)
    assert warnings[-1] == (
        "subject effects of cl were sampled centred (auto); if the data say little about them, "
        "refit with --parameterization noncentered"
    )


def test_divergences_name_every_centred_parameter_and_clean_fits_get_no_advice():
    warnings = convergence_warnings(_idata(0.0, divergent=3))
    assert any("3 divergent transitions" in w for w in warnings)
    assert "subject effects of cl were sampled centred (auto)" in warnings[-1]
    assert convergence_warnings(_idata(0.0)) == []
    # a forced non-centred fit is not told to go non-centred
    assert parameterization_advice(_idata(3.0, how="noncentered"), ["pop_cl"]) is None
    assert "sampled non-centred" in parameterization_advice(_idata(0.0), ["omega_v"])
