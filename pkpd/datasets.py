"""Bundled datasets: ``pkpd.datasets.load("temsirolimus")``.

The temsirolimus data are SYNTHETIC (simulated by ``datasets/temsirolimus/generate.py`` from a
stored truth); see ``datasets/README.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pkpd.data import Dataset, read_dataset

NAMES = {
    "temsirolimus": "temsirolimus/temsirolimus.csv",
    "temsirolimus_small": "temsirolimus/temsirolimus_small.csv",
    "two_studies": "examples/two_studies.csv",
}

#: Bundled arm-level summaries (:mod:`pkpd.data.aggregate` format) for ``pkpd.fit(...,
#: aggregate=)``: the Torisel label's (real numbers, assumptions in the file) and the synthetic
#: PH2 study's three dose arms (from the stored truth of the bundled subjects).
SUMMARIES = {
    "temsirolimus_label": "temsirolimus/published_summaries.csv",
    "temsirolimus_ph2": "temsirolimus/ph2_arm_summaries.csv",
}


def datasets_dir() -> Path:
    """The folder of the bundled datasets (the repository's ``datasets/``, installed as
    package data)."""
    from pkpd._bundled import folder

    return folder("datasets")


def path(name: str) -> Path:
    """File of a bundled dataset."""
    try:
        return datasets_dir() / NAMES[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; bundled: {', '.join(NAMES)}") from None


def summaries(name: str) -> Path:
    """File of bundled arm-level summaries (:data:`SUMMARIES`), for ``aggregate=``."""
    try:
        return datasets_dir() / SUMMARIES[name]
    except KeyError:
        raise ValueError(f"unknown summaries {name!r}; bundled: {', '.join(SUMMARIES)}") from None


def load(name: str = "temsirolimus") -> tuple[Dataset, dict | None]:
    """A bundled dataset, validated, and its simulation truth (``None`` if it has none).

    The truth holds ``truth.json`` (population values, covariate effects, variabilities,
    residual errors, study effects) plus ``"subjects"``: a DataFrame of every subject's
    covariates, random effects and individual parameters.
    """
    ds = read_dataset(path(name))
    truth_file = path(name).parent / "truth.json"
    truth = None
    if name.startswith("temsirolimus") and truth_file.exists():
        truth = json.loads(truth_file.read_text())
        subjects = pd.read_csv(truth_file.parent / "truth_subjects.csv")
        subjects["ID"] = subjects["ID"].astype(str)
        truth["subjects"] = subjects[subjects["ID"].isin(ds.subjects)].reset_index(drop=True)
    return ds, truth
