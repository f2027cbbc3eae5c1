"""Data: the dataset registry and loaders of every kind (images, dense and sparse features, text, audio), the
per-kind preparation (:mod:`.modality`), batches and streams."""

from . import catalog as _catalog  # noqa: F401  (registers the known datasets)
from .batch import Batch, concat_inputs, to_device
from .datasets import DATASETS, ArrayDataset, DatasetInfo, discover, load, lookup, register, register_embedded
from .modality import Audio, Features, Image, InputSpec, Modality, Text, load_tokenizer
from .root import ENV_VAR, data_root
from .samples import Ragged, SequenceDataset, SparseDataset, TextDataset
from .streams import LoaderStream, SampleStream, TensorStream, iterate_batches, make_stream
from .transforms import FeatureTransform, ImageTransform

__all__ = [
    "DATASETS", "ArrayDataset", "DatasetInfo", "discover", "load", "lookup", "register", "register_embedded",
    "ENV_VAR", "data_root", "Batch", "concat_inputs", "to_device", "LoaderStream", "SampleStream", "TensorStream",
    "make_stream", "iterate_batches", "FeatureTransform", "ImageTransform", "Audio", "Features", "Image", "InputSpec",
    "Modality", "Text", "load_tokenizer", "Ragged", "SequenceDataset", "SparseDataset", "TextDataset",
]
