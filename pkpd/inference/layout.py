"""The fit's subjects laid out for prediction: grouped by the costly endpoints they have
data on, trimmed to their doses and points, each prediction point made unique."""

from __future__ import annotations

import dataclasses

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from pkpd.inference.spec import FitSpec


def _trim(sub, n_d, n_p):
    """Subject arrays cut to the first ``n_d`` dose slots and ``n_p`` points."""
    import dataclasses as dc

    out = {}
    for f in dc.fields(sub):
        x = getattr(sub, f.name)
        if x is None:
            pass
        elif f.name.startswith("dose_"):
            x = x[:, :n_d]
        elif f.name.startswith("point_"):
            x = x[:, :n_p]
        out[f.name] = x
    return type(sub)(**out)


def _unique_points(sub):
    """Subject arrays with each subject's prediction points made unique, and the map back.

    Two records predict the same value when they share the time, the segment, the doses that
    act on them (:func:`pkpd.pk.analytic.host_given_mask`: order at equal times included), the
    occasion and the point covariates: e.g. a parent and a metabolite sample drawn together. Models may use
    only those (the prediction API's contract), so each such set is predicted once. Returns
    ``(unique, inverse)`` with ``inverse[s, p]`` the unique slot of point ``p``; padded points
    map to an invalid slot (whose value is 0 with pair layouts).
    """
    import dataclasses as dc

    from pkpd.pk.analytic import TIME_TOL, host_given_mask

    given = host_given_mask(sub)
    p_t = np.asarray(sub.point_time, dtype=float)
    S, P = p_t.shape
    valid = np.asarray(sub.point_valid)
    cov = np.asarray(sub.point_cov, dtype=float).reshape(S, P, -1)
    seg = np.asarray(sub.point_segment)
    occ = np.zeros((S, P), dtype=np.int32) if sub.point_occ is None else np.asarray(sub.point_occ)
    reps, inverse = [], np.zeros((S, P), dtype=np.int32)
    for i in range(S):
        slots: dict[tuple, int] = {}
        rep = []
        for j in range(P):
            key = (
                bool(valid[i, j]),
                round(float(p_t[i, j]) / TIME_TOL),
                int(seg[i, j]),
                int(occ[i, j]),
                given[i, :, j].tobytes(),
                cov[i, j].tobytes(),
            )
            if key not in slots:
                slots[key] = len(rep)
                rep.append(j)
            inverse[i, j] = slots[key]
        reps.append(rep)
    U = max(len(r) for r in reps)
    # padding slots repeat the subject's last point, marked invalid
    take = np.array([r + [r[-1]] * (U - len(r)) for r in reps])
    pad = np.array([[k >= len(r) for k in range(U)] for r in reps])
    out = {}
    for f in dc.fields(sub):
        x = getattr(sub, f.name)
        if f.name.startswith("point_") and x is not None:
            x = np.take_along_axis(
                np.asarray(x), take.reshape(take.shape + (1,) * (np.ndim(x) - 2)), axis=1
            )
            if f.name in ("point_valid", "point_mask"):
                x = x & ~pad
        out[f.name] = x
    return type(sub)(**out), inverse


def observation_predictor(spec: FitSpec):
    """``predict(params) -> {endpoint: [S, P], "ok": [S]}`` for the fit's subjects.

    ``params`` maps each parameter to ``[S]`` values. Subjects are grouped by the endpoints the
    model marks costly that they have data on, and each group's arrays are
    trimmed to its doses and observation points; values are exact at every observation point
    of the fit and 0 elsewhere. The model is told the dose kinds the data hold.
    """
    from pkpd.pk.analytic import kinds_in_data, pair_layout

    S = spec.n_subjects
    model = spec.model.with_dose_kinds(kinds_in_data(spec.padded.data))
    # Subjects grouped by the endpoints they have data for: each group predicts only those
    # (a PK-only study does not pay for the PD ODE of another study).
    groups = []
    have: dict[int, set] = {}
    for s_i, e_i in zip(spec.obs_subject.tolist(), spec.obs_endpoint.tolist(), strict=True):
        have.setdefault(s_i, set()).add(spec.endpoints[e_i])
    # Subjects are grouped by the costly endpoints (an integration or a per-subject
    # response worth skipping, as the model's ``costly_endpoints`` says) they have data on;
    # each group predicts those and every cheap endpoint of the fit (closed forms cost
    # little), so at most 2^(costly endpoints) variants need compiling. On the bundled
    # temsirolimus data: four groups (S6K, VEGF, VEGF + PD-1, PK only), where one group
    # for every PD subject computed S6K for 365 subjects and PD-1 for 141 (data: 24, 30).
    costly = set(model.costly_endpoints)
    cheap = tuple(e for e in spec.endpoints if e not in costly)
    by_set: dict[tuple, list[int]] = {}
    for s_i in range(S):
        mine = have.get(s_i, set())
        if not mine:
            continue
        key = cheap + tuple(e for e in spec.endpoints if e in costly and e in mine)
        by_set.setdefault(key, []).append(s_i)
    for key, idx in by_set.items():
        if key:
            groups.append((model.with_endpoints(key), key, np.asarray(idx)))
    P = spec.padded.data.point_time.shape[1]

    # Each group is trimmed to the doses and observation points its subjects have (padding
    # comes last), so a small study of few doses does not pay for the largest one.
    trimmed = []
    for variant, key, idx in groups:
        dm = np.asarray(spec.padded.data.dose_mask)[idx]
        pm = np.asarray(spec.padded.data.point_mask)[idx]
        n_d = max(1, int(np.max(np.where(dm.any(0))[0], initial=-1)) + 1)
        n_p = max(1, int(np.max(np.where(pm.any(0))[0], initial=-1)) + 1)
        sub = _trim(jax.tree.map(lambda x, i=idx: np.asarray(x)[i], spec.padded.data), n_d, n_p)
        sub, inverse = _unique_points(sub)
        sub = dataclasses.replace(sub, pairs=pair_layout(sub))
        grid = variant.precompute(sub)
        if grid is not None:
            sub = dataclasses.replace(sub, grid=grid)
        fn = jax.vmap(variant.predict)
        trimmed.append((fn, key, idx, jax.tree.map(jnp.asarray, sub), n_p, jnp.asarray(inverse)))

    def predict(params):
        out = {e: jnp.zeros((S, P)) for e in spec.endpoints}
        ok = jnp.ones(S, dtype=bool)
        for fn, key, idx, sub, n_p, inverse in trimmed:
            res = fn({k: v[idx] for k, v in params.items()}, sub)
            ok = ok.at[idx].set(res.get("ok", jnp.ones(len(idx), dtype=bool)))
            for e in key:
                out[e] = out[e].at[idx, :n_p].set(jnp.take_along_axis(res[e], inverse, axis=1))
        out["ok"] = ok
        return out

    return predict
