from ssat.data.registry import DATASETS, DataBundle, DataOptions, load_dataset, register_dataset
from ssat.data import (digits as _digits, cifar as _cifar, svhn as _svhn, mnist as _mnist,  # noqa: F401 (register)
                       flowers as _flowers, medmnist as _medmnist, chaoyang as _chaoyang, domainnet as _domainnet,
                       imagefolder as _imagefolder, csvlist as _csvlist)

__all__ = ["DATASETS", "DataBundle", "DataOptions", "load_dataset", "register_dataset"]
