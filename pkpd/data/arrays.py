"""Static-shape, masked arrays of doses and prediction points, ready for ``jax.vmap``.

Every subject is padded to the same number of dose events ``D`` and prediction points ``P``.
:class:`SubjectData` is a JAX pytree whose leaves all have the subject as their leading axis, so a
model written for one subject is batched with ``jax.vmap(model)(padded.data)``.

Padding conventions: padded doses have ``dose_mask=False``, ``dose_amt=0``, ``dose_evid=0`` and
the time of the subject's last real event; padded points have ``point_valid=False``,
``point_mask=False`` and the time of the subject's last real point. Times are finite everywhere
so that gradients stay finite.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import jax
import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SubjectData:
    """Per-subject arrays (leading axis = subject). Units: time h, amounts mg, rate mg/h.

    Dose events (``[S, D]``): ``dose_time``, ``dose_amt``, ``dose_rate`` (RATE, with the NONMEM
    codes -1/-2 kept), ``dose_dur``, ``dose_ii``, ``dose_cmt`` (0 = model default), ``dose_ss``,
    ``dose_evid`` (1 dose, 3 reset, 4 reset + dose, 0 padding), ``dose_seq``, ``dose_segment``,
    ``dose_row`` (record position, -1 padding), ``dose_mask``; ``dose_cov`` ``[S, D, K]`` holds the
    covariate values of the record a dose comes from (what NONMEM's ``$PK`` sees at that dose).

    Prediction points (``[S, P]``): ``point_time``, ``point_dv``, ``point_lloq``,
    ``point_endpoint`` (index into ``PaddedData.endpoints``, -1 none), ``point_cmt``,
    ``point_seq``, ``point_segment``, ``point_row``, ``point_blq``, ``point_mask`` (an
    observation that enters the likelihood: EVID 0, MDV 0), ``point_valid`` (a real record);
    ``point_cov`` ``[S, P, K]``.

    Per subject: ``cov`` ``[S, K]`` (covariates at the subject's first record), ``study``
    ``[S]`` (index into ``PaddedData.studies``). ``pairs``, ``grid``: see the fields.

    Ordering at equal times: an event acts on a point at the same time when its ``seq`` is lower
    than or equal to the point's (a dose row's own prediction is post-dose; implied ADDL doses
    have seq -1), and only within the same ``segment`` (resets and SS=1 doses start one).
    """

    dose_time: np.ndarray
    dose_amt: np.ndarray
    dose_rate: np.ndarray
    dose_dur: np.ndarray
    dose_ii: np.ndarray
    dose_cmt: np.ndarray
    dose_ss: np.ndarray
    dose_evid: np.ndarray
    dose_seq: np.ndarray
    dose_segment: np.ndarray
    dose_row: np.ndarray
    dose_mask: np.ndarray
    dose_cov: np.ndarray
    point_time: np.ndarray
    point_dv: np.ndarray
    point_lloq: np.ndarray
    point_endpoint: np.ndarray
    point_cmt: np.ndarray
    point_seq: np.ndarray
    point_segment: np.ndarray
    point_row: np.ndarray
    point_blq: np.ndarray
    point_mask: np.ndarray
    point_valid: np.ndarray
    point_cov: np.ndarray
    cov: np.ndarray
    study: np.ndarray
    #: Optional :class:`pkpd.pk.analytic.PairLayout` (``[S, K]``) of which dose acts on which
    #: point, for the analytic engine to evaluate only those pairs. Fits set it on the data they
    #: predict (after trimming); ``None`` elsewhere (every dose × point is evaluated).
    pairs: Any = None
    #: Optional ``(nodes, index, start_index)`` of a model's ODE grid (``[S, N]``, ``[S, P]``,
    #: ``[S, D]``) when it depends on the data only, computed once on the host by the fit
    #: (:meth:`pkpd.models.Model.precompute`); ``None`` elsewhere.
    grid: Any = None
    #: Occasions (data with an ``OCC`` column or occasions derived from the doses; ``None``
    #: elsewhere). ``point_occ`` ``[S, P]`` and ``dose_occ`` ``[S, D]``: the occasion index
    #: (0-based, in time order within the subject) of each point and dose (a record's own
    #: occasion; an implied ``ADDL`` dose takes the occasion its time falls in, a dose at an
    #: occasion's first time belonging to that occasion). ``occ_start``, ``occ_seq``,
    #: ``occ_segment`` ``[S, O]``: time, ``seq`` and ``segment`` of each occasion's first
    #: record; ``occ_valid`` ``[S, O]``: a real occasion (padding repeats the last one).
    point_occ: Any = None
    dose_occ: Any = None
    occ_start: Any = None
    occ_seq: Any = None
    occ_segment: Any = None
    occ_valid: Any = None

    @property
    def has_occasions(self) -> bool:
        """Whether the arrays carry occasions (:attr:`point_occ` and friends)."""
        return self.point_occ is not None


jax.tree_util.register_dataclass(
    SubjectData, data_fields=[f.name for f in fields(SubjectData)], meta_fields=[]
)


@dataclass(frozen=True)
class PaddedData:
    """Padded arrays plus the names that label their axes."""

    data: SubjectData
    subject_ids: tuple[str, ...]
    studies: tuple[str, ...]
    endpoints: tuple[str, ...]
    covariates: tuple[str, ...]
    prediction_rows: str
    #: Each subject's occasion labels (``OCC``, or a rule's ``"1"``, ``"2"``, ...) in time
    #: order: label ``k`` is occasion index ``k`` of the ``*_occ`` arrays; ``()`` without
    #: occasions.
    occasion_labels: tuple[tuple[str, ...], ...] = ()

    @property
    def n_subjects(self) -> int:
        return len(self.subject_ids)

    def covariate(self, name: str) -> np.ndarray:
        """Per-subject (first-record) values of one covariate, ``[S]``."""
        try:
            k = self.covariates.index(name)
        except ValueError:
            raise KeyError(
                f"no covariate {name!r}; the data have {', '.join(self.covariates) or 'none'}"
            ) from None
        return self.data.cov[:, k]


def pad_dataset(ds, *, prediction_rows: str = "observations") -> PaddedData:
    """Pad a :class:`~pkpd.data.dataset.Dataset` to :class:`PaddedData` (see module docstring)."""
    if prediction_rows not in ("observations", "all"):
        raise ValueError(f"prediction_rows={prediction_rows!r}; expected 'observations' or 'all'")
    r = ds.records.reset_index(drop=True)
    ev = ds.events()
    seq, segment = ds._seq_and_segment()
    subjects = ds.subjects
    studies = ds.studies
    endpoints = ds.endpoints
    covs = ds.covariates
    K = len(covs)
    cov_all = r[list(covs)].to_numpy(dtype=float) if K else np.zeros((len(r), 0))
    ep_index = {e: j for j, e in enumerate(endpoints)}
    study_index = {s: j for j, s in enumerate(studies)}

    if prediction_rows == "all":
        is_point = np.ones(len(r), dtype=bool)
    else:
        is_point = r["EVID"].isin((0, 2)).to_numpy()

    S = len(subjects)
    ev_groups = {s: g for s, g in ev.groupby("ID", sort=False)} if len(ev) else {}
    rows_by_subject = {s: np.asarray(ix) for s, ix in r.groupby("ID", sort=False).indices.items()}
    D = max([len(g) for g in ev_groups.values()] + [1])
    P = max([int(is_point[rows_by_subject[s]].sum()) for s in subjects] + [1])

    f = lambda: np.zeros((S, D))  # noqa: E731
    i_ = lambda fill=0: np.full((S, D), fill, dtype=np.int32)  # noqa: E731
    out = dict(
        dose_time=f(), dose_amt=f(), dose_rate=f(), dose_dur=f(), dose_ii=f(),
        dose_cmt=i_(), dose_ss=i_(), dose_evid=i_(), dose_seq=i_(), dose_segment=i_(),
        dose_row=i_(-1), dose_mask=np.zeros((S, D), dtype=bool), dose_cov=np.zeros((S, D, K)),
        point_time=np.zeros((S, P)), point_dv=np.full((S, P), np.nan),
        point_lloq=np.full((S, P), np.nan), point_endpoint=np.full((S, P), -1, dtype=np.int32),
        point_cmt=np.zeros((S, P), dtype=np.int32), point_seq=np.zeros((S, P), dtype=np.int32),
        point_segment=np.zeros((S, P), dtype=np.int32),
        point_row=np.full((S, P), -1, dtype=np.int32), point_blq=np.zeros((S, P), dtype=bool),
        point_mask=np.zeros((S, P), dtype=bool), point_valid=np.zeros((S, P), dtype=bool),
        point_cov=np.zeros((S, P, K)), cov=np.zeros((S, K)), study=np.zeros(S, dtype=np.int32),
    )  # fmt: skip
    time = r["TIME"].to_numpy(dtype=float)
    occ, occ_labels = _occasion_arrays(
        r, subjects, rows_by_subject, ev_groups, is_point, seq, segment, D, P
    )
    out.update(occ)
    for si, s in enumerate(subjects):
        rows = rows_by_subject[s]
        out["cov"][si] = cov_all[rows[0]]
        out["study"][si] = study_index[r.at[rows[0], "STUDY"]]
        g = ev_groups.get(s)
        if g is not None and len(g):
            n = len(g)
            out["dose_time"][si, :n] = g["TIME"]
            out["dose_amt"][si, :n] = g["AMT"]
            out["dose_rate"][si, :n] = g["RATE"]
            out["dose_dur"][si, :n] = g["DUR"]
            out["dose_ii"][si, :n] = g["II"]
            out["dose_cmt"][si, :n] = g["CMT"]
            out["dose_ss"][si, :n] = g["SS"]
            out["dose_evid"][si, :n] = g["EVID"]
            out["dose_seq"][si, :n] = g["SEQ"]
            out["dose_segment"][si, :n] = g["SEGMENT"]
            out["dose_row"][si, :n] = g["ROW"]
            out["dose_mask"][si, :n] = True
            out["dose_cov"][si, :n] = cov_all[g["ROW"].to_numpy()]
            out["dose_time"][si, n:] = g["TIME"].max()
        else:
            out["dose_time"][si, :] = time[rows].max()
        prow = rows[is_point[rows]]
        m = len(prow)
        if m:
            sub = r.iloc[prow]
            out["point_time"][si, :m] = time[prow]
            out["point_time"][si, m:] = time[prow].max()
            out["point_dv"][si, :m] = sub["DV"]
            out["point_lloq"][si, :m] = sub["LLOQ"]
            out["point_endpoint"][si, :m] = [ep_index.get(e, -1) for e in sub["ENDPOINT"]]
            out["point_cmt"][si, :m] = sub["CMT"]
            out["point_seq"][si, :m] = seq[prow]
            out["point_segment"][si, :m] = segment[prow]
            out["point_row"][si, :m] = prow
            out["point_blq"][si, :m] = sub["BLQ"]
            out["point_mask"][si, :m] = ((sub["EVID"] == 0) & (sub["MDV"] == 0)).to_numpy() & (
                out["point_endpoint"][si, :m] >= 0
            )
            out["point_valid"][si, :m] = True
            out["point_cov"][si, :m] = cov_all[prow]
    return PaddedData(
        data=SubjectData(**out),
        subject_ids=tuple(subjects),
        studies=tuple(studies),
        endpoints=tuple(endpoints),
        covariates=tuple(covs),
        prediction_rows=prediction_rows,
        occasion_labels=occ_labels,
    )


def _occasion_arrays(r, subjects, rows_by_subject, ev_groups, is_point, seq, segment, D, P):
    """The occasion fields of :class:`SubjectData` and each subject's occasion labels in time
    order (``{}``, ``()`` when the records have no ``OCC``)."""
    if "OCC" not in r.columns:
        return {}, ()
    S = len(subjects)
    labels = r["OCC"].astype(str).to_numpy()
    time = r["TIME"].to_numpy(dtype=float)
    starts = []  # per subject: record rows of each occasion's first record
    for s in subjects:
        rows = rows_by_subject[s]
        first = {}
        for i in rows:
            first.setdefault(labels[i], i)
        starts.append(list(first.values()))
    n_occ = max(len(x) for x in starts)
    out = dict(
        point_occ=np.zeros((S, P), dtype=np.int32),
        dose_occ=np.zeros((S, D), dtype=np.int32),
        occ_start=np.zeros((S, n_occ)),
        occ_seq=np.zeros((S, n_occ), dtype=np.int32),
        occ_segment=np.zeros((S, n_occ), dtype=np.int32),
        occ_valid=np.zeros((S, n_occ), dtype=bool),
    )
    for si, s in enumerate(subjects):
        rows = rows_by_subject[s]
        first = starts[si]
        index = {labels[i]: k for k, i in enumerate(first)}
        n = len(first)
        pad = first + [first[-1]] * (n_occ - n)
        out["occ_start"][si] = time[pad]
        out["occ_seq"][si] = seq[pad]
        out["occ_segment"][si] = segment[pad]
        out["occ_valid"][si, :n] = True
        prow = rows[is_point[rows]]
        out["point_occ"][si, : len(prow)] = [index[labels[i]] for i in prow]
        if len(prow):
            out["point_occ"][si, len(prow) :] = index[labels[prow[-1]]]
        g = ev_groups.get(s)
        if g is not None and len(g):
            own = np.array([index[labels[i]] for i in g["ROW"].to_numpy()], dtype=np.int32)
            # an implied ADDL dose (SEQ -1) acts in the occasion its time falls in
            by_time = np.searchsorted(time[first], g["TIME"].to_numpy(dtype=float), "right") - 1
            implied = g["SEQ"].to_numpy() < 0
            d_occ = np.where(implied, np.maximum(by_time, 0), own)
            out["dose_occ"][si, : len(g)] = d_occ
            out["dose_occ"][si, len(g) :] = d_occ[-1]
    return out, tuple(tuple(labels[i] for i in first) for first in starts)


def unpad_points(padded: PaddedData, values: np.ndarray, n_records: int) -> np.ndarray:
    """Scatter per-point values ``[S, P]`` back to one value per dataset record.

    Records that are not prediction points get NaN. Used to write a prediction column.
    """
    values = np.asarray(values)
    out = np.full(n_records, np.nan)
    rows = np.asarray(padded.data.point_row)
    valid = np.asarray(padded.data.point_valid)
    out[rows[valid]] = values[valid]
    return out


def events_frame(padded: PaddedData) -> pd.DataFrame:
    """The padded dose events back as a table (masked entries removed), for round-trip checks."""
    d = padded.data
    mask = np.asarray(d.dose_mask)
    sidx, didx = np.nonzero(mask)
    return pd.DataFrame(
        {
            "ID": [padded.subject_ids[i] for i in sidx],
            "TIME": d.dose_time[sidx, didx],
            "EVID": d.dose_evid[sidx, didx].astype(np.int64),
            "AMT": d.dose_amt[sidx, didx],
            "RATE": d.dose_rate[sidx, didx],
            "DUR": d.dose_dur[sidx, didx],
            "CMT": d.dose_cmt[sidx, didx].astype(np.int64),
            "II": d.dose_ii[sidx, didx],
            "SS": d.dose_ss[sidx, didx].astype(np.int64),
            "ROW": d.dose_row[sidx, didx].astype(np.int64),
        }
    )
