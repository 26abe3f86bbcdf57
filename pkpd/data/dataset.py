"""A validated NONMEM-style dataset: records, dose events, summary and padded arrays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pkpd.data.errors import escape_text

#: Columns of :meth:`Dataset.events` and :meth:`pkpd.Regimen.to_events`, with their units.
EVENT_FIELDS = {
    "ID": "",
    "TIME": "h",
    "EVID": "",
    "AMT": "mg",
    "AMT_MG_M2": "mg/m2",
    "RATE": "mg/h",
    "DUR": "h",
    "CMT": "",
    "II": "h",
    "SS": "",
    "ADDL_INDEX": "",
    "ROW": "",
    "SEQ": "",
    "SEGMENT": "",
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A checked NONMEM-style dataset. Build it with :func:`pkpd.read_dataset`.

    Attributes
    ----------
    records : pandas.DataFrame
        One row per data record (comments excluded), in file order, with canonical columns:
        ``LINE`` (source line), ``ID``, ``STUDY``, ``TIME`` (h), ``EVID``, ``AMT`` (mg),
        ``AMT_MG_M2``, ``AMT_UNIT`` (as given), ``RATE`` (mg/h; -1/-2 NONMEM codes kept),
        ``DUR`` (h), ``CMT`` (0 = model default), ``II`` (h), ``ADDL``, ``SS``, ``DV``, ``MDV``,
        ``LLOQ``, ``BLQ`` (bool), ``DVU`` (the unit ``DV`` and ``LLOQ`` are in: the endpoint's;
        "" where not known), ``DV_ORIG``, ``LLOQ_ORIG`` (as given), ``DVU_ORIG`` (their unit as
        given by ``DVU`` or ``dv_units``; "" where none was given), ``ENDPOINT`` (name, "" on
        dose rows), then the covariates (missing cells filled from the same subject's nearest
        earlier, else later, record).
    covariates : tuple of str
        Covariate column names.
    comment_lines : tuple of int
        Lines (rows of a DataFrame) skipped as comments, in order.
    input_header : tuple of str or None
        The header as written (for :meth:`input_table`); ``None`` for a Dataset not built by
        :func:`pkpd.read_dataset`.
    input_cells : tuple of tuple of str or None
        Each record's cells as the reader split them, in :attr:`records` order.
    endpoint_column : str or None
        ``"DVID"`` or ``"ENDPOINT"``, the column the endpoints were read from (None: none).
    endpoint_codes : tuple of (str, str)
        Each code of the endpoint column the records use (``"1"``, or a name as written in
        lower case) and the endpoint it was read as, in order of first use.
    endpoint_mapping : str
        How the codes were mapped (the model's codes, the data's one code for a one-endpoint
        model, ``--dvid``/``endpoints=``, or pkpd's default temsirolimus codes).
    endpoint_units : tuple of (str, str)
        The unit of each endpoint's ``DV`` and ``LLOQ`` in :attr:`records`.
    occasions : str
        Where the occasions in ``records["OCC"]`` come from (``"column OCC"``, or the rule
        that derived them from the doses); ``""``: the data have none (no ``OCC`` column).
    """

    records: pd.DataFrame
    covariates: tuple[str, ...]
    source: str | None = None
    where: str = "line"
    comment_lines: tuple[int, ...] = ()
    filled_covariate_cells: int = 0
    input_header: tuple[str, ...] | None = field(default=None, repr=False)
    input_cells: tuple[tuple[str, ...], ...] | None = field(default=None, repr=False)
    endpoint_column: str | None = None
    endpoint_codes: tuple[tuple[str, str], ...] = ()
    endpoint_mapping: str = ""
    endpoint_units: tuple[tuple[str, str], ...] = ()
    occasions: str = ""

    # -- basic facts ---------------------------------------------------------------------------
    @property
    def subjects(self) -> tuple[str, ...]:
        """Subject IDs in order of first appearance."""
        return tuple(pd.unique(self.records["ID"]))

    @property
    def studies(self) -> tuple[str, ...]:
        return tuple(pd.unique(self.records["STUDY"]))

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Endpoints that have at least one observation (MDV=0), in order of appearance."""
        r = self.records
        return tuple(pd.unique(r.loc[self._obs_mask(), "ENDPOINT"]))

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    @property
    def n_observations(self) -> int:
        return int(self._obs_mask().sum())

    def _obs_mask(self) -> np.ndarray:
        r = self.records
        return ((r["EVID"] == 0) & (r["MDV"] == 0)).to_numpy()

    def input_table(self) -> pd.DataFrame:
        """The data records as the reader split them: one row per record of :attr:`records`.

        Columns are the header's names as written, in order; every cell is the text the reader
        read (stripped of surrounding blanks; for a DataFrame source, its values as text, ``.``
        for missing). Comment lines are not included, so row ``k`` is ``records.iloc[k]``. The
        index, named ``LINE``, is each record's line of the file (row of a DataFrame), the same as
        ``records["LINE"]``.

        Raises
        ------
        ValueError
            When the Dataset was not built by :func:`pkpd.read_dataset` (for instance restored
            from a fit), so the input text is not known.

        Examples
        --------
        >>> import io, pkpd
        >>> text = "ID,Time,AMT,DV\\n# note\\n1,0,10,.\\n1,1.50,.,3\\n"
        >>> ds = pkpd.read_dataset(io.StringIO(text))
        >>> table = ds.input_table()
        >>> list(table.columns), table.index.tolist(), table["Time"].tolist()
        (['ID', 'Time', 'AMT', 'DV'], [3, 4], ['0', '1.50'])
        """
        if self.input_header is None or self.input_cells is None:
            raise ValueError(
                "this Dataset was not built by pkpd.read_dataset, so its input table is not known"
            )
        return pd.DataFrame(
            list(self.input_cells),
            columns=list(self.input_header),
            index=pd.Index(self.records["LINE"].to_numpy(dtype=np.int64), name="LINE"),
            dtype=object,
        )

    # -- events -----------------------------------------------------------------------------------
    def events(self) -> pd.DataFrame:
        """Dose and reset events with ``ADDL`` expanded, one row per administration.

        Columns are :data:`EVENT_FIELDS`. ``ROW`` is the position in :attr:`records` of the record
        the event comes from. ``ADDL_INDEX`` is 0 for the record itself and k for its k-th
        additional dose (at ``TIME + k*II``, ``SS=0``, ``EVID 1``). ``SEQ`` orders events that share
        a time with other records of the subject: explicit records carry their position within
        the subject, implied additional doses carry -1 (given before any record at the same
        time). ``SEGMENT`` counts resets within the subject: EVID 3, EVID 4 and SS=1 records start
        a new segment, and a dose acts only on its own segment (NONMEM: a reset clears the
        system, SS=1 replaces it with the steady state).
        """
        r = self.records
        seq, segment = self._seq_and_segment()
        is_ev = r["EVID"].isin((1, 3, 4)).to_numpy()
        rows = np.flatnonzero(is_ev)
        out = []
        for i in rows:
            rec = r.iloc[i]
            base = {
                "ID": rec["ID"],
                "TIME": float(rec["TIME"]),
                "EVID": int(rec["EVID"]),
                "AMT": float(rec["AMT"]),
                "AMT_MG_M2": float(rec["AMT_MG_M2"]),
                "RATE": float(rec["RATE"]),
                "DUR": float(rec["DUR"]),
                "CMT": int(rec["CMT"]),
                "II": float(rec["II"]),
                "SS": int(rec["SS"]),
                "ADDL_INDEX": 0,
                "ROW": int(i),
                "SEQ": int(seq[i]),
                "SEGMENT": int(segment[i]),
            }
            out.append(base)
            for k in range(1, int(rec["ADDL"]) + 1):
                out.append(
                    base
                    | {
                        "TIME": base["TIME"] + k * base["II"],
                        "EVID": 1,
                        "SS": 0,
                        "ADDL_INDEX": k,
                        "SEQ": -1,
                    }
                )
        frame = pd.DataFrame(out, columns=list(EVENT_FIELDS))
        return frame.astype(
            {
                "TIME": float,
                "AMT": float,
                "AMT_MG_M2": float,
                "RATE": float,
                "DUR": float,
                "II": float,
                "EVID": np.int64,
                "CMT": np.int64,
                "SS": np.int64,
                "ADDL_INDEX": np.int64,
                "ROW": np.int64,
                "SEQ": np.int64,
                "SEGMENT": np.int64,
            }
        )

    def _seq_and_segment(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.records
        ids = r["ID"].to_numpy()
        resets = (r["EVID"].isin((3, 4)) | (r["EVID"].isin((1, 4)) & (r["SS"] == 1))).to_numpy()
        seq = np.zeros(len(r), dtype=np.int64)
        segment = np.zeros(len(r), dtype=np.int64)
        current, k, seg = None, 0, 0
        for i, s in enumerate(ids):
            if s != current:
                current, k, seg = s, 0, 0
            if resets[i]:
                seg += 1
            seq[i] = k
            segment[i] = seg
            k += 1
        return seq, segment

    # -- arrays -----------------------------------------------------------------------------------
    def to_arrays(self, *, prediction_rows: str = "observations"):
        """Pad every subject's events and observations to static shapes.

        Parameters
        ----------
        prediction_rows : {"observations", "all"}
            Which records become prediction points: EVID 0/2 records (for fitting), or every
            record (dose and reset rows too, as a NONMEM ``$TABLE`` has them).

        Returns
        -------
        pkpd.data.arrays.PaddedData
        """
        from pkpd.data.arrays import pad_dataset

        return pad_dataset(self, prediction_rows=prediction_rows)

    # -- summary ----------------------------------------------------------------------------------
    def summary(self) -> dict:
        """Counts and ranges a person checks before fitting (what `pkpd validate` prints)."""
        r = self.records
        obs = self._obs_mask()
        ev = self.events()
        per_study = r.groupby("STUDY", sort=False)["ID"].nunique()
        per_ep = r.loc[obs].groupby("ENDPOINT", sort=False).size()
        blq_ep = r.loc[obs & r["BLQ"].to_numpy()].groupby("ENDPOINT", sort=False).size()
        doses = ev[ev["EVID"].isin((1, 4))]
        cov = {}
        for c in self.covariates:
            base = r.groupby("ID", sort=False)[c].first()
            cov[c] = {
                "min": float(base.min()),
                "median": float(base.median()),
                "max": float(base.max()),
            }
        return {
            "source": self.source,
            "subjects": int(self.n_subjects),
            "records": len(r),
            "subjects_per_study": {str(k): int(v) for k, v in per_study.items()},
            "dose_records": int(r["EVID"].isin((1, 4)).sum()),
            "doses_after_addl": len(doses),
            "doses_mg_m2": int((r["AMT_UNIT"] == "mg/m2").sum()),
            "observations": int(obs.sum()),
            "observations_per_endpoint": {str(k): int(v) for k, v in per_ep.items()},
            "blq": int((obs & r["BLQ"].to_numpy()).sum()),
            "blq_per_endpoint": {str(k): int(v) for k, v in blq_ep.items()},
            "excluded_mdv1": int(((r["EVID"] == 0) & (r["MDV"] == 1)).sum()),
            "evid2_records": int((r["EVID"] == 2).sum()),
            "reset_records": int(r["EVID"].isin((3, 4)).sum()),
            "comment_lines": list(self.comment_lines),
            "filled_covariate_cells": int(self.filled_covariate_cells),
            "covariates": cov,
            "endpoint_column": self.endpoint_column,
            "endpoint_codes": dict(self.endpoint_codes),
            "endpoint_mapping": self.endpoint_mapping,
            "endpoint_units": dict(self.endpoint_units),
            "dv_conversions": self._conversions(),
            "occasions": self._occasions(),
        }

    def _occasions(self) -> dict | None:
        """Occasions per subject (min, median, max) and where they come from; None without."""
        if not self.occasions or "OCC" not in self.records:
            return None
        per = self.records.groupby("ID", sort=False)["OCC"].nunique()
        return {
            "source": self.occasions,
            "min": int(per.min()),
            "median": float(per.median()),
            "max": int(per.max()),
            "subjects_with_several": int((per > 1).sum()),
        }

    def _conversions(self) -> dict[str, dict[str, int]]:
        """``{endpoint: {unit as given: records}}`` of records whose DV/LLOQ were converted,
        and ``{endpoint: {"": records}}`` of those given in no unit (taken as the endpoint's)."""
        r = self.records
        if "DVU_ORIG" not in r:
            return {}
        has = (r["ENDPOINT"] != "").to_numpy()
        out: dict[str, dict[str, int]] = {}
        for (ep, unit), k in (
            r.loc[has].groupby(["ENDPOINT", "DVU_ORIG"], sort=False).size().items()
        ):
            out.setdefault(str(ep), {})[str(unit)] = int(k)
        return out

    def summary_text(self) -> str:
        s = self.summary()
        lines = [
            f"dataset {s['source'] or '(DataFrame)'}: {s['records']} records, {s['subjects']} subjects"
        ]
        lines.append(
            "  subjects per study: "
            + ", ".join(f"{k}: {v}" for k, v in s["subjects_per_study"].items())
        )
        lines.append(
            f"  doses: {s['dose_records']} dose records, {s['doses_after_addl']} administrations "
            f"after ADDL expansion ({s['doses_mg_m2']} records given in mg/m2)"
        )
        lines.append(
            f"  observations: {s['observations']}"
            + (
                " ("
                + ", ".join(f"{k}: {v}" for k, v in s["observations_per_endpoint"].items())
                + ")"
                if s["observations_per_endpoint"]
                else ""
            )
        )
        lines += self._endpoint_lines(s)
        occ = s["occasions"]
        if occ:
            lines.append(
                f"  occasions ({occ['source']}): {occ['min']}-{occ['max']} per subject "
                f"(median {occ['median']:g}); {occ['subjects_with_several']} of "
                f"{s['subjects']} subjects have several"
            )
        lines.append(
            f"  below LLOQ (censored, M3): {s['blq']}"
            + (
                " (" + ", ".join(f"{k}: {v}" for k, v in s["blq_per_endpoint"].items()) + ")"
                if s["blq_per_endpoint"]
                else ""
            )
        )
        lines.append(
            f"  not used in the likelihood: {s['excluded_mdv1']} observation records with MDV=1, "
            f"{s['evid2_records']} EVID=2 records; {s['reset_records']} reset records (EVID 3/4)"
        )
        if s["comment_lines"]:
            n_c = len(s["comment_lines"])
            plural = "s" if n_c > 1 else ""
            lines.append(
                f"  comment lines skipped: {n_c} ({self.where}{plural} "
                f"{line_ranges(s['comment_lines'])})"
            )
        if s["filled_covariate_cells"]:
            lines.append(
                f"  missing covariate cells filled from the same subject's records: "
                f"{s['filled_covariate_cells']}"
            )
        if s["covariates"]:
            lines.append("  covariates (per-subject first value: min / median / max):")
            for c, v in s["covariates"].items():
                lines.append(f"    {c}: {v['min']:g} / {v['median']:g} / {v['max']:g}")
        return "\n".join(escape_text(x) for x in lines)

    def _endpoint_lines(self, s: dict) -> list[str]:
        """How endpoints were read (codes, mapping) and the units of their observations."""
        units = s["endpoint_units"]

        def unit(ep):
            return f" ({units[ep]})" if units.get(ep) else ""

        lines = []
        col = s["endpoint_column"]
        if col is not None and s["endpoint_codes"]:
            pairs = ", ".join(
                f"{col} {code} \u2192 {ep}{unit(ep)}" for code, ep in s["endpoint_codes"].items()
            )
            lines.append(f"  endpoints: {pairs} [{s['endpoint_mapping']}]")
        elif col is None and s["observations_per_endpoint"]:
            eps = ", ".join(f"{ep}{unit(ep)}" for ep in s["observations_per_endpoint"])
            lines.append(f"  endpoints: no DVID/ENDPOINT column, every observation is {eps}")
        conv = s["dv_conversions"]
        if conv:
            per_endpoint = []
            for ep, by_unit in conv.items():
                target = units.get(ep, "")
                parts = []
                for given, k in by_unit.items():
                    rec = f"{k} record{'s' if k != 1 else ''}"
                    if not given:
                        what = f"taken as {target}" if target else "in no known unit"
                        parts.append(f"{rec} {what} (no DVU, no --dv-unit)")
                    elif given.lower().replace(" ", "") == target.lower().replace(" ", ""):
                        parts.append(f"{rec} in {given}")
                    else:
                        f = self._factor(ep, given)
                        f = f" (\u00d7 {f:g})" if f is not None else ""
                        parts.append(f"{rec} converted from {given} to {target}{f}")
                per_endpoint.append(f"{ep}: " + ", ".join(parts))
            lines.append("  DV units: " + "; ".join(per_endpoint))
        return lines

    def _factor(self, ep: str, given: str) -> float | None:
        """The factor applied to the records of ``ep`` given in ``given``: DV / DV_ORIG."""
        r = self.records
        sel = (r["ENDPOINT"] == ep) & (r["DVU_ORIG"] == given)
        ratio = (r.loc[sel, "DV"] / r.loc[sel, "DV_ORIG"]).to_numpy(dtype=float)
        ratio = ratio[np.isfinite(ratio)]
        return float(np.median(ratio)) if len(ratio) else None


def line_ranges(numbers) -> str:
    """Numbers as compact ranges: ``[2, 3, 4, 7, 9, 10]`` -> ``"2-4, 7, 9-10"``."""
    nums = sorted(set(int(x) for x in numbers))
    parts = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        parts.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ", ".join(parts)
