from ssat.data.registry import DATASETS, DataBundle, load_dataset, register_dataset
from ssat.data import digits as _digits, cifar as _cifar, imagefolder as _imagefolder  # noqa: F401 (register)

__all__ = ["DATASETS", "DataBundle", "load_dataset", "register_dataset"]
