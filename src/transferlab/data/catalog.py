"""The datasets transferlab knows, in the prepared layout of docs/data.md.

Every set loads with :func:`transferlab.data.load` by name: images and dense features from ``<part>.npz``, the
Amazon reviews as sparse svmlight, OpeNER as TSV text (a part is ``<language>_<split>``), speech as
concatenated-utterance npz files.
"""

from __future__ import annotations

from .datasets import DatasetInfo, register
from .embedded import embedded_digits, embedded_digits_m

OFFICE = ("amazon", "caltech", "dslr", "webcam")
AMAZON = ("books", "dvd", "electronics", "kitchen")
OPENER = ("en", "es", "ca", "eu")

for info in (
    DatasetInfo("digits", "image", 10, ("train", "test"),
                "scikit-learn's bundled 8x8 digits (half of them), grey; embedded, no download",
                embedded=embedded_digits),
    DatasetInfo("digits_m", "image", 10, ("train", "test"),
                "the other half of the digits blended with scikit-learn's sample photos, like MNIST-M; embedded",
                embedded=embedded_digits_m),
    DatasetInfo("mnist", "image", 10, ("train", "test"), "MNIST handwritten digits, 28x28 grey", downloadable=True),
    DatasetInfo("usps", "image", 10, ("train", "test"), "USPS handwritten digits, 16x16 grey in [0,1]", downloadable=True),
    DatasetInfo("mnist_m", "image", 10, ("train", "test"), "MNIST-M: MNIST on colour photo patches, 32x32 RGB (download converts a copy you place in raw/)",
                downloadable=True),
    DatasetInfo("svhn", "image", 10, ("train", "test"), "SVHN street-view house numbers, 32x32 RGB", downloadable=True),
    DatasetInfo("office_caltech10_images", "image", 10, OFFICE, "Office-Caltech10 images, 64x64 RGB, 4 domains"),
    DatasetInfo("office_caltech10_surf", "features", 10, OFFICE, "Office-Caltech10 SURF bag-of-words, 800-d"),
    DatasetInfo("office_caltech10_googlenet1024", "features", 10, ("amazon", "dslr", "webcam"),
                "Office-Caltech10 GoogLeNet features, 1024-d"),
    DatasetInfo("pneumoniamnist", "image", 2, ("train", "val", "test"), "PneumoniaMNIST chest X-ray, 28x28 grey"),
    DatasetInfo("brain_tumor_mri", "image", 2, ("all_64", "all_128"), "brain MRI tumour yes/no, 64/128 px grey"),
    DatasetInfo("amazon_reviews", "features", 2, tuple(f"{d}_{s}" for d in AMAZON for s in ("train", "test")),
                "Amazon review sentiment, 4 domains, 5000-d sparse bag of words (svmlight, kept sparse)",
                format="svmlight", options={"n_features": 5000, "zero_based": True, "label_values": [-1, 1]},
                classes=("negative", "positive")),
    DatasetInfo("opener_sentiment", "text", 5, tuple(f"{lang}_{s}" for lang in OPENER for s in ("train", "dev", "test")),
                "OpeNER sentence sentiment, 4 languages (TSV); 0 strong neg, 1 neg, 2 pos, 3 strong pos, 4 mixed",
                format="tsv", classes=("strong_negative", "negative", "positive", "strong_positive", "mixed")),
    DatasetInfo("fsdd", "audio", 10, ("train", "test"), "Free Spoken Digit Dataset, 8 kHz speech, 6 speakers",
                format="audio"),
    DatasetInfo("speechocean762", "audio", 2, ("test",), "speechocean762 read speech with transcripts, 16 kHz; "
                "label: child (1) vs adult (0)", format="audio", options={"label_key": "is_child"},
                classes=("adult", "child")),
):
    register(info)
