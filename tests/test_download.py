"""Tests for transferlab.data.download. All offline: a local HTTP server or file:// URLs."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.server
import io
import os
import socket
import struct
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
from PIL import Image

from transferlab.data import download as dl
from transferlab.data.download import DOWNLOADERS, Resource, download, fetch
from transferlab.errors import DataError, TransferlabError

SHARED_DATA = Path(
    os.environ.get("TRANSFERLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def all_files(folder: Path) -> set[str]:
    """Every file below ``folder`` (hidden temp files included), relative posix paths."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (written independently of the code under test)."""
    assert array.dtype == np.uint8
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def svmlight_line(label: int, features: dict[int, float]) -> str:
    return " ".join([str(label)] + [f"{i}:{v:g}" for i, v in sorted(features.items())]) + "\n"


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def local_resource(folder: Path, filename: str, data: bytes, sha: str | None = None) -> Resource:
    path = folder / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Resource(path.as_uri(), sha or sha256(data), filename)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as d:  # default allow_pickle=False: fails on pickled objects
        return {k: d[k] for k in d.files}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 (random port) serving ``served/``, counting GETs."""
    served = tmp_path / "served"
    served.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(
            dir=served, url=f"http://127.0.0.1:{httpd.server_address[1]}/", hits=hits
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# fetch
# ---------------------------------------------------------------------------------------------

PAYLOAD = np.random.default_rng(0).integers(0, 256, size=2_500_000, dtype=np.uint8).tobytes()


def test_fetch_downloads_and_verifies(server, tmp_path):
    (server.dir / "blob.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "dest"
    res = Resource(server.url + "blob.bin", sha256(PAYLOAD), "blob.bin")

    path = fetch(res, dest, progress=False)

    assert path == dest / "blob.bin"
    assert path.read_bytes() == PAYLOAD
    assert server.hits == ["/blob.bin"]
    assert all_files(dest) == {"blob.bin"}  # no temp file left behind


def test_fetch_checksum_mismatch_leaves_nothing(server, tmp_path):
    (server.dir / "blob.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "dest"
    wrong = sha256(b"something else")
    res = Resource(server.url + "blob.bin", wrong, "blob.bin")

    with pytest.raises(DataError) as info:
        fetch(res, dest, progress=False)

    message = str(info.value)
    assert wrong in message
    assert sha256(PAYLOAD) in message
    assert res.url in message
    assert isinstance(info.value, TransferlabError)
    assert all_files(dest) == set()  # neither the file nor a temp file


def test_fetch_skips_download_of_valid_existing_file(server, tmp_path):
    (server.dir / "blob.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "blob.bin").write_bytes(PAYLOAD)
    res = Resource(server.url + "blob.bin", sha256(PAYLOAD), "blob.bin")

    assert fetch(res, dest, progress=False) == dest / "blob.bin"
    assert server.hits == []


def test_fetch_downloads_once(server, tmp_path):
    (server.dir / "blob.bin").write_bytes(PAYLOAD)
    res = Resource(server.url + "blob.bin", sha256(PAYLOAD), "blob.bin")
    fetch(res, tmp_path / "dest", progress=False)
    fetch(res, tmp_path / "dest", progress=False)
    assert server.hits == ["/blob.bin"]


def test_fetch_replaces_corrupt_existing_file(server, tmp_path):
    (server.dir / "blob.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "blob.bin").write_bytes(b"truncated")
    res = Resource(server.url + "blob.bin", sha256(PAYLOAD), "blob.bin")

    fetch(res, dest, progress=False)

    assert (dest / "blob.bin").read_bytes() == PAYLOAD
    assert server.hits == ["/blob.bin"]


def test_fetch_falls_back_to_mirror(server, tmp_path):
    (server.dir / "mirror").mkdir()
    (server.dir / "mirror" / "blob.bin").write_bytes(PAYLOAD)
    res = Resource(
        server.url + "missing/blob.bin",
        sha256(PAYLOAD),
        "blob.bin",
        mirrors=(server.url + "mirror/blob.bin",),
    )

    path = fetch(res, tmp_path / "dest", progress=False)

    assert path.read_bytes() == PAYLOAD
    assert server.hits == ["/missing/blob.bin", "/mirror/blob.bin"]


def test_fetch_offline_says_what_to_do(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/blob.bin"
    dest = tmp_path / "dest"
    res = Resource(url, sha256(PAYLOAD), "blob.bin")

    with pytest.raises(DataError) as info:
        fetch(res, dest, progress=False)

    message = str(info.value)
    assert url in message
    assert "offline" in message
    assert "TRANSFERLAB_DATA" in message and "--data-root" in message
    assert all_files(dest) == set()


def test_fetch_file_url(tmp_path):
    res = local_resource(tmp_path / "src", "blob.bin", PAYLOAD[:1000])
    path = fetch(res, tmp_path / "dest", progress=False)
    assert path.read_bytes() == PAYLOAD[:1000]


def test_fetch_progress_bar(tmp_path, capsys):
    res = local_resource(tmp_path / "src", "blob.bin", PAYLOAD)
    fetch(res, tmp_path / "quiet", progress=False)
    assert capsys.readouterr().err == ""
    fetch(res, tmp_path / "loud", progress=True)
    assert "blob.bin" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# MNIST (IDX)
# ---------------------------------------------------------------------------------------------


def test_read_idx_plain_and_gzip(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    labels = np.array([7, 0, 9, 3], dtype=np.uint8)
    (tmp_path / "images.idx").write_bytes(idx_bytes(images))
    (tmp_path / "labels.idx.gz").write_bytes(gzip.compress(idx_bytes(labels)))

    np.testing.assert_array_equal(dl.read_idx(tmp_path / "images.idx"), images)
    out = dl.convert_mnist_idx(tmp_path / "images.idx", tmp_path / "labels.idx.gz")
    assert out["x"].dtype == np.uint8 and out["x"].shape == (4, 28, 28)
    assert out["y"].dtype == np.int64
    np.testing.assert_array_equal(out["x"], images)
    assert out["y"].tolist() == [7, 0, 9, 3]


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad_magic").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="not an IDX file"):
        dl.read_idx(tmp_path / "bad_magic")
    good = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    (tmp_path / "truncated").write_bytes(good[:-5])
    with pytest.raises(DataError, match="shape"):
        dl.read_idx(tmp_path / "truncated")


def test_convert_mnist_rejects_count_mismatch(tmp_path):
    (tmp_path / "i").write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    (tmp_path / "l").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(DataError, match="3 samples but 2 labels"):
        dl.convert_mnist_idx(tmp_path / "i", tmp_path / "l")


@pytest.mark.data
def test_mnist_conversion_matches_shared_prepared_test_split():
    raw = SHARED_DATA / "mnist" / "raw"
    images, labels = raw / "t10k-images-idx3-ubyte.gz", raw / "t10k-labels-idx1-ubyte.gz"
    prepared = SHARED_DATA / "mnist" / "test.npz"
    missing = [p for p in (images, labels, prepared) if not p.is_file()]
    if missing:
        pytest.skip(f"shared MNIST files not found (set TRANSFERLAB_DATA): {missing}")

    out = dl.convert_mnist_idx(images, labels)
    expected = load_npz(prepared)

    assert out["x"].dtype == expected["x"].dtype == np.uint8
    assert out["y"].dtype == expected["y"].dtype == np.int64
    assert out["x"].shape == (10000, 28, 28)
    np.testing.assert_array_equal(out["x"], expected["x"])
    np.testing.assert_array_equal(out["y"], expected["y"])


@pytest.mark.data
def test_pinned_mnist_checksums_match_shared_raw_files():
    raw = SHARED_DATA / "mnist" / "raw"
    present = [r for r in dl.MNIST_RESOURCES.values() if (raw / r.filename).is_file()]
    if not present:
        pytest.skip(f"no MNIST raw files under {raw} (set TRANSFERLAB_DATA)")
    for resource in present:
        assert dl.sha256_file(raw / resource.filename) == resource.sha256, resource.filename


# ---------------------------------------------------------------------------------------------
# USPS (svmlight)
# ---------------------------------------------------------------------------------------------


def usps_file(path: Path) -> Path:
    dense = {i: -1.0 for i in range(1, 257)}
    dense.update({1: 1.0, 2: 0.5, 17: 0.0, 256: -0.25})
    text = (
        svmlight_line(1, dense)  # digit 0, all 256 features listed
        + svmlight_line(10, {3: 1.0})  # digit 9, sparse: missing features are 0 -> 0.5
        + "\n"  # blank lines are ignored
        + svmlight_line(5, {i: 1.0 for i in range(1, 257)})  # digit 4, all ones
    )
    path.write_bytes(bz2.compress(text.encode("ascii")))
    return path


def test_convert_usps_svmlight(tmp_path):
    out = dl.convert_usps_svmlight(usps_file(tmp_path / "usps.bz2"))
    x, y = out["x"], out["y"]

    assert y.dtype == np.int64 and y.tolist() == [0, 9, 4]
    assert x.dtype == np.float32 and x.shape == (3, 16, 16)
    # row 0: index k (1-based) -> pixel ((k-1)//16, (k-1)%16), value (v+1)/2
    assert x[0, 0, 0] == 1.0  # 1:1
    assert x[0, 0, 1] == 0.75  # 2:0.5
    assert x[0, 1, 0] == 0.5  # 17:0
    assert x[0, 15, 15] == 0.375  # 256:-0.25
    assert x[0, 0, 2] == 0.0  # -1
    # row 1: sparse
    assert x[1, 0, 2] == 1.0
    assert np.count_nonzero(x[1] == 0.5) == 255
    # row 2: all ones
    assert np.all(x[2] == 1.0)
    assert x.min() >= 0.0 and x.max() <= 1.0


@pytest.mark.parametrize(
    "line, match",
    [("11 1:0\n", "labels outside"), ("0 1:0\n", "labels outside"),
     ("3 257:0\n", "257 features"), ("3 0:0.5\n", "index 0"), ("3 1:2.5\n", r"\[-1, 1\]"), ("3 1:abc\n", "svmlight")],
)
def test_convert_usps_rejects_bad_input(tmp_path, line, match):
    path = tmp_path / "bad.bz2"
    path.write_bytes(bz2.compress(line.encode()))
    with pytest.raises(DataError, match=match):
        dl.convert_usps_svmlight(path)


# ---------------------------------------------------------------------------------------------
# SVHN (.mat)
# ---------------------------------------------------------------------------------------------


def svhn_mat(path: Path, n: int = 5, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n, dtype=np.uint8) * 3 % 10 + 1).reshape(n, 1)  # 1, 4, 7, 10, 3, ...
    scipy.io.savemat(path, {"X": X, "y": y})
    return X, y


def test_convert_svhn_mat(tmp_path):
    X, y = svhn_mat(tmp_path / "train_32x32.mat")
    out = dl.convert_svhn_mat(tmp_path / "train_32x32.mat")

    assert out["x"].dtype == np.uint8 and out["x"].shape == (5, 32, 32, 3)
    assert out["y"].dtype == np.int64 and out["y"].tolist() == [1, 4, 7, 0, 3]
    for i in range(5):
        np.testing.assert_array_equal(out["x"][i], X[:, :, :, i])
    assert out["x"][2, 5, 9, 1] == X[5, 9, 1, 2]


def test_convert_svhn_rejects_wrong_shape(tmp_path):
    bad = {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": [[1], [2]]}
    scipy.io.savemat(tmp_path / "bad.mat", bad)
    with pytest.raises(DataError, match=r"\(32,32,3,N\)"):
        dl.convert_svhn_mat(tmp_path / "bad.mat")


# ---------------------------------------------------------------------------------------------
# full downloaders, with the resource tables pointed at local files
# ---------------------------------------------------------------------------------------------


def check_parts(folder: Path, shapes: dict[str, tuple], dtype) -> dict[str, dict]:
    parts = {}
    for part, shape in shapes.items():
        data = load_npz(folder / f"{part}.npz")
        assert {"x", "y"} <= set(data)
        assert data["x"].dtype == dtype and data["x"].shape == shape
        assert data["y"].dtype == np.int64 and data["y"].shape == (shape[0],)
        assert data["y"].min() >= 0 and data["y"].max() <= 9
        parts[part] = data
    npz = {p.name for p in folder.glob("*.npz")}
    assert npz == {f"{p}.npz" for p in shapes}
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp files
    return parts


def test_download_mnist(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    arrays = {
        "train_images": rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8),
        "train_labels": np.array([5, 0, 4, 1, 9], np.uint8),
        "test_images": rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8),
        "test_labels": np.array([7, 2, 1], np.uint8),
    }
    src = tmp_path / "src"
    table = {
        key: local_resource(src, orig.filename, gzip.compress(idx_bytes(arrays[key])))
        for key, orig in dl.MNIST_RESOURCES.items()
    }
    monkeypatch.setattr(dl, "MNIST_RESOURCES", table)
    root = tmp_path / "root"

    assert download("mnist", root) == root / "mnist"

    parts = check_parts(root / "mnist", {"train": (5, 28, 28), "test": (3, 28, 28)}, np.uint8)
    np.testing.assert_array_equal(parts["train"]["x"], arrays["train_images"])
    assert parts["train"]["y"].tolist() == [5, 0, 4, 1, 9]
    assert parts["test"]["y"].tolist() == [7, 2, 1]
    assert all_files(root / "mnist" / "raw") == {r.filename for r in table.values()}

    # a second run uses the verified raw files and needs no source
    for path in src.iterdir():
        path.unlink()
    download("mnist", root)
    np.testing.assert_array_equal(load_npz(root / "mnist" / "test.npz")["x"], arrays["test_images"])


def test_download_usps(tmp_path, monkeypatch):
    src = tmp_path / "src"
    train = usps_file(tmp_path / "train.bz2").read_bytes()
    test = bz2.compress(svmlight_line(2, {1: 1.0}).encode())
    monkeypatch.setattr(
        dl,
        "USPS_RESOURCES",
        {
            "train": local_resource(src, "usps.bz2", train),
            "test": local_resource(src, "usps.t.bz2", test),
        },
    )

    download("usps", tmp_path / "root")

    parts = check_parts(
        tmp_path / "root" / "usps", {"train": (3, 16, 16), "test": (1, 16, 16)}, np.float32
    )
    assert parts["train"]["y"].tolist() == [0, 9, 4]
    assert parts["test"]["y"].tolist() == [1]
    assert parts["test"]["x"][0, 0, 0] == 1.0 and parts["test"]["x"][0, 0, 1] == 0.5


def test_download_svhn(tmp_path, monkeypatch):
    src = tmp_path / "src"
    X_train, _ = svhn_mat(tmp_path / "a.mat", n=4, seed=4)
    X_test, _ = svhn_mat(tmp_path / "b.mat", n=2, seed=5)
    monkeypatch.setattr(
        dl,
        "SVHN_RESOURCES",
        {
            "train": local_resource(src, "train_32x32.mat", (tmp_path / "a.mat").read_bytes()),
            "test": local_resource(src, "test_32x32.mat", (tmp_path / "b.mat").read_bytes()),
        },
    )

    download("svhn", tmp_path / "root")

    parts = check_parts(
        tmp_path / "root" / "svhn", {"train": (4, 32, 32, 3), "test": (2, 32, 32, 3)}, np.uint8
    )
    assert parts["train"]["y"].tolist() == [1, 4, 7, 0]
    np.testing.assert_array_equal(parts["train"]["x"], X_train.transpose(3, 0, 1, 2))
    np.testing.assert_array_equal(parts["test"]["x"], X_test.transpose(3, 0, 1, 2))


def test_download_checksum_mismatch_writes_no_part(tmp_path, monkeypatch):
    src = tmp_path / "src"
    good = usps_file(tmp_path / "train.bz2").read_bytes()
    monkeypatch.setattr(
        dl,
        "USPS_RESOURCES",
        {"train": local_resource(src, "usps.bz2", good, sha="0" * 64)},
    )
    with pytest.raises(DataError, match="0" * 64):
        download("usps", tmp_path / "root")
    assert all_files(tmp_path / "root") == set()


def mnist_m_tree(n_train: int = 3, n_test: int = 2) -> tuple[dict[str, bytes], dict]:
    rng = np.random.default_rng(6)
    files: dict[str, bytes] = {}
    expected = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labels = [(3 * i + len(split)) % 10 for i in range(n)]
        names = [f"{i:08d}.png" for i in range(n)]
        for name, image in zip(names, images):
            files[f"mnist_m/mnist_m_{split}/{name}"] = png_bytes(image)
        files[f"mnist_m/mnist_m_{split}_labels.txt"] = "".join(
            f"{name} {label}\n" for name, label in zip(names, labels)
        ).encode()
        expected[split] = (images, labels, names)
    return files, expected


def test_download_mnist_m_without_source_explains(tmp_path):
    with pytest.raises(DataError) as info:
        download("mnist_m", tmp_path / "root")
    message = str(info.value)
    assert str(tmp_path / "root" / "mnist_m" / "raw") in message
    assert "TRANSFERLAB_DATA" in message and "--data-root" in message
    assert "train.npz" in message


@pytest.mark.parametrize("form", ["tar.gz", "folder"])
def test_download_mnist_m_converts_local_distribution(tmp_path, form):
    files, expected = mnist_m_tree()
    raw = tmp_path / "root" / "mnist_m" / "raw"
    raw.mkdir(parents=True)
    if form == "tar.gz":
        with tarfile.open(raw / "mnist_m.tar.gz", "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        for name, data in files.items():
            (raw / name).parent.mkdir(parents=True, exist_ok=True)
            (raw / name).write_bytes(data)

    download("mnist_m", tmp_path / "root")

    parts = check_parts(
        tmp_path / "root" / "mnist_m", {"train": (3, 32, 32, 3), "test": (2, 32, 32, 3)}, np.uint8
    )
    for split, (images, labels, names) in expected.items():
        np.testing.assert_array_equal(parts[split]["x"], images)
        assert parts[split]["y"].tolist() == labels
        assert parts[split]["names"].tolist() == names


def test_convert_mnist_m_rejects_unlabelled_image(tmp_path):
    files, _ = mnist_m_tree()
    files["mnist_m/mnist_m_test/00000099.png"] = png_bytes(np.zeros((32, 32, 3), np.uint8))
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError, match="1 images have no label"):
        dl.convert_mnist_m(tmp_path / "mnist_m")


def test_download_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(DataError) as info:
        download("cifar10", tmp_path)
    assert "cifar10" in str(info.value)
    assert "mnist, mnist_m, svhn, usps" in str(info.value)


# ---------------------------------------------------------------------------------------------
# atomic writes and the pinned tables
# ---------------------------------------------------------------------------------------------


def test_save_npz_atomic_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "test.npz"
    dl.save_npz_atomic(target, x=np.arange(3, dtype=np.uint8), y=np.arange(3))
    before = target.read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        dl.save_npz_atomic(target, x=np.zeros(5), y=np.zeros(5))

    assert target.read_bytes() == before
    assert all_files(tmp_path) == {"test.npz"}


def test_save_npz_atomic_refuses_object_arrays(tmp_path):
    with pytest.raises(ValueError, match="object"):
        dl.save_npz_atomic(tmp_path / "a.npz", x=np.array([{"a": 1}], dtype=object))
    assert all_files(tmp_path) == set()


def test_pinned_tables_are_well_formed():
    assert set(DOWNLOADERS) == {"mnist", "usps", "mnist_m", "svhn"}
    tables = [dl.MNIST_RESOURCES, dl.USPS_RESOURCES, dl.SVHN_RESOURCES]
    resources = [r for table in tables for r in table.values()]
    assert len(resources) == 8
    for r in resources:
        assert len(r.sha256) == 64 and set(r.sha256) <= set("0123456789abcdef"), r
        for url in r.urls:
            assert url.startswith(("https://", "http://")) and url.endswith("/" + r.filename), r
    assert len({r.sha256 for r in resources}) == 8
    with pytest.raises(TypeError):
        dl.MNIST_RESOURCES["x"] = resources[0]  # read-only tables
