"""Checks of a prepared fit that need the model's predictions, run before any sampling.

A log-normal residual error takes the log of the prediction: where the model predicts exactly 0
(a sample taken at the dose time of an oral dose, before a lag time, or before the first dose)
the observation's likelihood is that of a residual of ~28 log units (the likelihood floors the
prediction at 1e-12), which drags the residual SD up and gives divergent transitions without a
word. NONMEM users floor the log prediction by hand; pkpd names the records instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

#: A prediction below this fraction of the subject's largest one counts as 0.
ZERO_RELATIVE = 1e-9


def zero_prediction_problems(spec, *, max_listed: int = 20) -> list[str]:
    """Observations predicted as 0 at the priors' typical values under a log-normal error.

    Only concentration endpoints (the model's ``concentration_endpoints``) with a ``lognormal``
    residual model are checked: their
    prediction is exactly 0 where no drug has arrived yet, whatever the parameter values (a
    structural zero), while a PD endpoint has a baseline.

    Parameters
    ----------
    spec : pkpd.inference.fit.FitSpec
    max_listed : int
        Records listed per endpoint; the count says how many there are in all.

    Returns
    -------
    list of str
        One message per endpoint with such observations, naming their data lines.
    """
    checked = [
        e
        for e in spec.endpoints
        if e in spec.priors.residuals
        and spec.priors.residuals[e].model == "lognormal"
        and e in spec.model.concentration_endpoints
    ]
    if not checked:
        return []
    typical = spec.priors.typical()
    params = {p: float(v) for p, v in typical.items() if p in spec.model.parameters}
    params.update({p: float(v) for p, v in spec.fixed.items() if p in spec.model.parameters})
    model = spec.model.with_endpoints(checked)

    def one(subject):
        out = model.predict(params, subject)
        return jnp.stack([out[e] for e in checked])  # [E, P]

    pred = np.asarray(jax.jit(jax.vmap(one))(spec.padded.data))  # [S, E, P]
    problems = []
    for k, e in enumerate(checked):
        e_i = spec.endpoints.index(e)
        sel = np.nonzero(np.asarray(spec.obs_endpoint) == e_i)[0]
        p = pred[spec.obs_subject[sel], k, spec.obs_point[sel]]
        # "0" up to rounding: the closed forms give ~1e-14 ng/mL at the dose time of an oral
        # dose; anything below 1e-9 of the subject's largest prediction is no drug at all
        peak = np.max(np.abs(pred[:, k, :]), axis=1)[spec.obs_subject[sel]]
        zero = sel[~(p > ZERO_RELATIVE * peak)]
        if not len(zero):
            continue
        lines = [int(x) for x in np.asarray(spec.obs_line)[zero]]
        shown = ", ".join(str(x) for x in lines[:max_listed])
        more = f" and {len(lines) - max_listed} more" if len(lines) > max_listed else ""
        problems.append(
            f"endpoint {e}: the model predicts 0 at {len(lines)} observation(s) (data line(s) "
            f"{shown}{more}; e.g. a sample at the dose time of an oral dose or before the first "
            f"dose), and its residual error is lognormal, which takes the log of the prediction. "
            "Set MDV=1 on those records, or choose a proportional or combined error "
            f"(--error {e}=combined)"
        )
    return problems
