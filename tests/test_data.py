"""Data: the prepared-layout loader, the embedded default, streams and transforms."""

import numpy as np
import pytest
import torch

from transferlab.data import DATASETS, ImageTransform, TensorStream, load, register_embedded
from transferlab.errors import DataError, TransferlabError


@pytest.mark.data
@pytest.mark.parametrize("name, part, n, shape, dtype", [
    ("mnist", "test", 10000, (28, 28), torch.uint8),
    ("usps", "train", 7291, (16, 16), torch.float32),
    ("mnist_m", "test", 9001, (32, 32, 3), torch.uint8),
])
def test_prepared_layout_loads(data_root, name, part, n, shape, dtype):
    ds = load(name, part, data_root)
    assert len(ds) == n and tuple(ds.x.shape[1:]) == shape and ds.x.dtype == dtype
    assert ds.y.dtype == torch.int64 and set(ds.y.unique().tolist()) == set(range(10))


def test_missing_and_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match=r"usps.*test\.npz does not exist.*--data-root.*datasets download usps"):
        load("usps", "test", tmp_path)
    (tmp_path / "usps").mkdir()
    (tmp_path / "usps" / "test.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="corrupt or truncated"):
        load("usps", "test", tmp_path)
    np.savez_compressed(tmp_path / "usps" / "train.npz", x=np.zeros((3, 16, 16), np.float32), y=np.array([0, 1, 12]))
    with pytest.raises(DataError, match="labels must lie in 0..9"):
        load("usps", "train", tmp_path)
    with pytest.raises(DataError, match="no part 'val'"):
        load("usps", "val", tmp_path)
    with pytest.raises(TransferlabError, match="Did you mean 'usps'"):
        load("uspss", "train", tmp_path)


def test_embedded_pair_is_deterministic_disjoint_and_shifted():
    src, tgt = load("digits", "train"), load("digits_m", "train")
    again = load("digits_m", "train")
    assert torch.equal(tgt.x, again.x)
    assert src.x.shape[1:] == (8, 8) and tgt.x.shape[1:] == (32, 32, 3)
    assert len(src) + len(load("digits", "test")) + len(tgt) + len(load("digits_m", "test")) == 1797
    # The target is colourful (channels differ), the source is grey.
    assert (tgt.x[..., 0].float() - tgt.x[..., 1].float()).abs().mean() > 10
    assert DATASETS.get("digits").embedded is not None


def test_register_embedded_loads_from_memory_and_may_be_called_again(tmp_path):
    def make(part):
        n = 4 if part == "train" else 2
        return {"x": np.arange(n * 6, dtype=np.uint8).reshape(n, 2, 3), "y": np.arange(n) % 3}

    info = register_embedded("toy_in_memory", make, num_classes=3, description="a test's toy set")
    ds = load("toy_in_memory", "train", tmp_path)  # the data root is never read
    assert len(ds) == 4 and ds.x.dtype == torch.uint8 and ds.y.tolist() == [0, 1, 2, 0] and ds.num_classes == 3
    assert len(load("toy_in_memory", "test")) == 2 and info.present_parts(tmp_path) == ["train", "test"]
    # the same registration again (a script run twice in one process) keeps the first
    assert register_embedded("toy_in_memory", lambda part: {}, num_classes=3, description="a test's toy set") is info
    # a different dataset under a taken name is refused
    with pytest.raises(ValueError, match="registered twice"):
        register_embedded("toy_in_memory", make, num_classes=5, description="a test's toy set")
    with pytest.raises(ValueError, match="registered twice"):
        register_embedded("usps", make, num_classes=10, description=DATASETS.get("usps").description)


def test_stream_draws_epochs_without_replacement_and_resumes_exactly():
    ds = load("digits", "train")
    stream = TensorStream(ds, 64, seed=3)
    per_epoch = len(ds) // 64
    seen = torch.cat([next(stream).y for _ in range(per_epoch)])
    assert len(seen) == per_epoch * 64
    first = [next(stream).x for _ in range(3)]
    state = stream.state_dict()
    expected = [next(stream).x for _ in range(per_epoch + 2)]  # crosses an epoch boundary
    other = TensorStream(ds, 64, seed=3)
    other.load_state_dict(state)
    for a, b in zip(expected, [next(other).x for _ in range(per_epoch + 2)]):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], expected[0])


def test_stream_rejects_batches_larger_than_the_data():
    ds = load("digits", "test")
    with pytest.raises(DataError, match="fewer than the batch size"):
        TensorStream(ds, 10_000, seed=0)


def test_image_transform_scales_resizes_and_adapts_channels():
    grey = torch.full((2, 8, 8), 255, dtype=torch.uint8)
    out = ImageTransform(channels=3, size=16, mean=(0.5,) * 3, std=(0.5,) * 3)(grey)
    assert out.shape == (2, 3, 16, 16) and torch.allclose(out, torch.ones_like(out))
    rgb = torch.zeros((1, 4, 4, 3), dtype=torch.uint8)
    rgb[..., 0] = 255  # pure red -> luma 0.299
    out = ImageTransform(channels=1, size=None, mean=(0.0,), std=(1.0,))(rgb)
    assert out.shape == (1, 1, 4, 4) and torch.allclose(out, torch.full_like(out, 0.299))
    floats = torch.full((1, 16, 16), 0.25)  # USPS stores floats in [0,1]: no /255
    assert torch.allclose(ImageTransform(1, None, (0.0,), (1.0,))(floats), torch.full((1, 1, 16, 16), 0.25))


def test_loader_stream_draws_the_same_batches_as_the_device_stream_and_resumes():
    from transferlab.data import LoaderStream, make_stream

    ds = load("digits", "train")
    tensor_stream = TensorStream(ds, 64, seed=5)
    loader_stream = LoaderStream(ds, 64, seed=5, num_workers=2)
    per_epoch = len(ds) // 64
    for _ in range(per_epoch + 3):  # across an epoch boundary
        a, b = next(tensor_stream), next(loader_stream)
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    state = loader_stream.state_dict()
    expected = [next(loader_stream).x for _ in range(4)]
    resumed = LoaderStream(ds, 64, seed=5, num_workers=0)
    resumed.load_state_dict(state)
    for want in expected:
        assert torch.equal(next(resumed).x, want)
    assert isinstance(make_stream(ds, 64, seed=0, max_device_bytes=10), LoaderStream)
    assert isinstance(make_stream(ds, 64, seed=0), TensorStream)


def test_pretransformed_stream_draws_the_same_batches():
    """A deterministic transform applied to the whole set ahead gives exactly the batches that applying
    it per batch gives (same order, same values, same channels-last layout), across an epoch boundary."""
    from transferlab.data import make_stream

    ds = load("digits_m", "train")
    transform = ImageTransform(channels=1, size=16, mean=(0.5,), std=(0.25,))
    per_batch = TensorStream(ds, 64, seed=5, transform=transform)
    ahead = TensorStream(ds, 64, seed=5, transform=transform, pretransform=True)
    assert ahead.transform is None and ahead.x.dtype == torch.float32 and ahead.x.shape[1:] == (1, 16, 16)
    for _ in range(len(ds) // 64 + 3):
        a, b = next(per_batch), next(ahead)
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
        assert b.x.is_contiguous(memory_format=torch.channels_last)
    # make_stream applies it ahead when the result fits the budget, per batch otherwise
    assert make_stream(ds, 64, seed=0, transform=transform).transform is None
    assert make_stream(ds, 64, seed=0, transform=transform, max_pretransform_bytes=1000).transform is transform
    with pytest.raises(ValueError, match="not marked deterministic"):
        TensorStream(ds, 64, seed=0, transform=lambda x: x.float(), pretransform=True)


def test_a_target_without_a_test_split_is_evaluated_on_the_target_domain_itself(tmp_path):
    """Sets whose parts are domains (Office-Caltech, Amazon reviews) have no test split: the default evaluation
    is the transductive one of the DANN/TLlib benchmarks, on the whole target domain."""
    import numpy as np

    from transferlab.config import DomainConfig
    from transferlab.data import register_embedded
    from transferlab.experiment import default_test, load_config, train

    def make(part):
        rng = np.random.default_rng({"left": 0, "right": 1}[part])
        return {"x": rng.normal(size=(30, 6)).astype(np.float32) + (part == "right"), "y": np.arange(30) % 2}

    register_embedded("test_two_domains", make, num_classes=2, parts=("left", "right"), kind="features")
    assert default_test(DomainConfig(name="test_two_domains", part="right")) == DomainConfig(name="test_two_domains", part="right")
    assert default_test(DomainConfig(name="digits_m", part="train")).part == "test"
    raw = {"data": {"source": {"name": "test_two_domains", "part": "left"}, "target": {"name": "test_two_domains", "part": "right"},
                    "batch_size": 8},
           "model": {"backbone": "mlp", "bottleneck_dim": 0, "mlp": {"hidden": [8]}},
           "method": {"name": "dann"}, "train": {"iterations": 2, "eval_every": 0, "checkpoint_every": 0}}
    result = train(load_config(raw=raw), None, progress=False)
    assert result["test_set"] == "test_two_domains/right" and "target_test/acc" in result
