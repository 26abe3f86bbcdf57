"""NONMEM-style data: reading, validation, dose events and padded arrays.

The padded arrays (:mod:`pkpd.data.arrays`, JAX pytrees) are imported when first used, so
reading and validating a file does not start JAX.
"""

import importlib

from pkpd.data.dataset import EVENT_FIELDS, Dataset
from pkpd.data.errors import MAX_PROBLEMS_SHOWN_PER_KIND, DatasetError, Problem
from pkpd.data.reader import (
    CANONICAL_UNITS,
    DEFAULT_ENDPOINTS,
    MAX_IMPLIED_DOSES_PER_RECORD,
    MAX_IMPLIED_DOSES_PER_SUBJECT,
    DataUnitWarning,
    read_dataset,
    unit_factor,
)


def __getattr__(name):
    if name in ("PaddedData", "SubjectData", "pad_dataset"):
        return getattr(importlib.import_module("pkpd.data.arrays"), name)
    raise AttributeError(f"module 'pkpd.data' has no attribute {name!r}")


__all__ = [
    "CANONICAL_UNITS",
    "DEFAULT_ENDPOINTS",
    "EVENT_FIELDS",
    "MAX_IMPLIED_DOSES_PER_RECORD",
    "MAX_IMPLIED_DOSES_PER_SUBJECT",
    "MAX_PROBLEMS_SHOWN_PER_KIND",
    "DataUnitWarning",
    "Dataset",
    "DatasetError",
    "PaddedData",
    "Problem",
    "SubjectData",
    "pad_dataset",
    "read_dataset",
    "unit_factor",
]
