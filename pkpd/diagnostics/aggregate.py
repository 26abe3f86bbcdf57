"""Published arm-level summaries beside what the fitted model predicts for them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd


def aggregate_table(fit, quantiles=(0.05, 0.5, 0.95), seed: int = 0) -> pd.DataFrame:
    """Each published summary beside its posterior predictive distribution: the statistic a
    trial of the arm's ``n`` would report, over the posterior (``aggregate_mu`` and
    ``aggregate_se`` of every draw, a normal sampling draw each), and where the published
    value falls in it (``tail``: the predictive probability below it)."""
    post = fit.posterior
    if "aggregate_mu" not in post:
        raise ValueError("the fit has no aggregate data (pkpd.fit(..., aggregate=...))")
    rows = json.loads(fit.attrs["aggregate_rows"])
    mu = post["aggregate_mu"].values.reshape(-1, len(rows))
    se = post["aggregate_se"].values.reshape(-1, len(rows))
    rng = np.random.default_rng(seed)
    pred = mu + se * rng.standard_normal(mu.shape)
    out = []
    for i, r in enumerate(rows):
        p = np.exp(pred[:, i]) if r["log_scale"] else pred[:, i]
        q = np.nanquantile(p, quantiles)
        rec = {k: r[k] for k in ("study", "arm", "endpoint", "metric", "statistic", "n")}
        rec.update(
            published=r["value_model"],
            unit=r["model_unit"],
            **{f"pred_q{int(round(100 * qq))}": v for qq, v in zip(quantiles, q, strict=True)},
            tail=float(np.mean(p < r["value_model"])),
            mc_ratio=r["mc_ratio"],
            source=r["source"],
        )
        out.append(rec)
    return pd.DataFrame(out)


__all__ = ["aggregate_table"]
