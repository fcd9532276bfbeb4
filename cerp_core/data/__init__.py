"""Data sets in one call: ``load_dataset(name_or_path_or_frame) -> Interactions``."""

from cerp_core.data.errors import (
    DataError,
    DataFormatError,
    DataIntegrityError,
    DatasetNotFoundError,
    DataWarning,
)
from cerp_core.data.frame import from_dataframe, k_core, split_train_test
from cerp_core.data.interactions import Interactions, split_per_user
from cerp_core.data.loading import (
    DATASET_NAMES,
    load_dataset,
    read_lightgcn_dir,
    source_fingerprint,
)
from cerp_core.data.sources import CACHE_DIR_ENV, DATA_DIR_ENV, data_root
from cerp_core.data.synthetic import make_synthetic

__all__ = [
    "CACHE_DIR_ENV",
    "DATA_DIR_ENV",
    "DATASET_NAMES",
    "DataError",
    "DataFormatError",
    "DataIntegrityError",
    "DataWarning",
    "DatasetNotFoundError",
    "Interactions",
    "data_root",
    "from_dataframe",
    "k_core",
    "load_dataset",
    "make_synthetic",
    "read_lightgcn_dir",
    "source_fingerprint",
    "split_per_user",
    "split_train_test",
]
