"""Data: the dataset registry, the prepared-layout loader, transforms and streams."""

from . import catalog as _catalog  # noqa: F401  (registers the known datasets)
from .datasets import DATASETS, ArrayDataset, DatasetInfo, load, register, register_embedded
from .root import ENV_VAR, data_root
from .streams import Batch, LoaderStream, TensorStream, concat_inputs, iterate_batches, make_stream
from .transforms import FeatureTransform, ImageTransform

__all__ = [
    "DATASETS", "ArrayDataset", "DatasetInfo", "load", "register", "register_embedded", "ENV_VAR", "data_root",
    "Batch", "LoaderStream", "TensorStream", "make_stream", "concat_inputs", "iterate_batches", "FeatureTransform", "ImageTransform",
]
