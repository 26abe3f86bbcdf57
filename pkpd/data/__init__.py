"""NONMEM-style data: reading, validation, dose events and padded arrays."""

from pkpd.data.arrays import PaddedData, SubjectData, pad_dataset
from pkpd.data.dataset import EVENT_FIELDS, Dataset
from pkpd.data.errors import DatasetError, Problem
from pkpd.data.reader import DEFAULT_ENDPOINTS, read_dataset

__all__ = [
    "DEFAULT_ENDPOINTS",
    "EVENT_FIELDS",
    "Dataset",
    "DatasetError",
    "PaddedData",
    "Problem",
    "SubjectData",
    "pad_dataset",
    "read_dataset",
]
