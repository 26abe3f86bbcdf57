"""NONMEM-style data: reading, validation, dose events and padded arrays."""

from pkpd.data.arrays import PaddedData, SubjectData, pad_dataset
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
