"""`transferlab datasets import`: images, text, audio and arrays into the prepared layout, found by name afterwards.

Every test uses its own data root (tmp_path) and builds its source files here: images with Pillow, audio with
numpy + soundfile, text as written strings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from transferlab.cli import main
from transferlab.data import load
from transferlab.data import importers


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def listed(capsys, root: Path) -> dict[str, list[str]]:
    """`datasets list` rows marked imported: name -> cells."""
    code, out, _ = cli(capsys, "datasets", "list", "--data-root", root)
    assert code == 0
    return {cells[0]: cells for cells in (line.split() for line in out.splitlines()) if cells and cells[-1] == "imported"}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) and its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


# --- sources ---------------------------------------------------------------------------------------------------


def grey(seed: int, size=(28, 28)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def image_folder(folder: Path, counts: dict[str, int], seed: int = 0, size=(28, 28)) -> dict[str, list[np.ndarray]]:
    """``folder/<class>/<i>.png`` grey images; returns the pixels per class in file-name order."""
    pixels: dict[str, list[np.ndarray]] = {}
    for k, (name, n) in enumerate(counts.items()):
        (folder / name).mkdir(parents=True)
        pixels[name] = []
        for i in range(n):
            array = grey(seed * 1000 + k * 100 + i, size)
            Image.fromarray(array).save(folder / name / f"{i:02d}.png")
            pixels[name].append(array)
    return pixels


def wav(path: Path, samples: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), samples, rate, subtype="PCM_16")


def tone(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 3000).astype(np.int16)


def tiny_train(tmp_path: Path, name: str, lines: str) -> Path:
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        f"data: {{source: {{name: {name}, part: train}}, test: {{name: {name}, part: test}}, batch_size: 8}}\n"
        f"{lines}method: {{name: source_only}}\n"
        "train: {iterations: 4, eval_every: 0, checkpoint_every: 0, log_every: 2, deterministic: true}\n")
    return config


# --- images ----------------------------------------------------------------------------------------------------


def test_images_import_list_load_and_train(tmp_path, capsys):
    root = tmp_path / "root"
    train = image_folder(tmp_path / "train", {"dog": 4, "cat": 6})
    test = image_folder(tmp_path / "test", {"cat": 3, "dog": 3}, seed=1)
    code, out, err = cli(capsys, "datasets", "import", "images", tmp_path / "train", "--name", "pets", "--data-root", root)
    assert code == 0, err
    assert "imported 10 image rows as pets/train" in out
    code, _, err = cli(capsys, "datasets", "import", "images", tmp_path / "test", "--name", "pets", "--part", "test",
                       "--data-root", root)
    assert code == 0, err

    row = listed(capsys, root)["pets"]
    assert row[1:5] == ["image", "2", "train,test", "all"]

    data = load("pets", "train", root)
    assert data.classes == ["cat", "dog"] and data.num_classes == 2  # sorted sub-folder names
    assert data.y.tolist() == [0] * 6 + [1] * 4
    assert data.x.dtype.is_floating_point is False and tuple(data.x.shape) == (10, 28, 28)  # all grey -> 1 channel
    np.testing.assert_array_equal(data.x[0].numpy(), train["cat"][0])
    np.testing.assert_array_equal(data.x[9].numpy(), train["dog"][3])
    assert load("pets", "test", root).y.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(load("pets", "test", root).x[3].numpy(), test["dog"][0])

    manifest = json.loads((root / "pets" / "dataset.json").read_text())
    assert manifest["kind"] == "image" and manifest["format"] == "npz" and manifest["classes"] == ["cat", "dog"]
    source = (root / "pets" / "SOURCE.md").read_text()
    for file in ("train.npz", "test.npz", "dataset.json"):
        digest = hashlib.sha256((root / "pets" / file).read_bytes()).hexdigest()
        assert f"{digest}  {file}" in source, file
    assert "| 0 | cat | 6 |" in source and "| 1 | dog | 3 |" in source and str((tmp_path / "train").resolve()) in source
    assert "transferlab datasets import images" in source and "--part test" in source

    config = tiny_train(tmp_path, "pets", "model: {backbone: lenet, bottleneck_dim: 16}\n")
    code, out, err = cli(capsys, "train", config, "--data-root", root, "--out", tmp_path / "run", "--no-progress")
    assert code == 0, err
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["step"] == 4 and "target_test/acc" in result
    assert '"test_set": "pets/test"' in out


def test_images_of_different_sizes_need_image_size_and_colour_sets_the_channels(tmp_path, capsys):
    root = tmp_path / "root"
    image_folder(tmp_path / "src", {"a": 2, "b": 2})
    colour = np.random.default_rng(5).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(colour).save(tmp_path / "src" / "b" / "zz.png")
    code, _, err = cli(capsys, "datasets", "import", "images", tmp_path / "src", "--name", "mixed", "--data-root", root)
    assert_error(code, err, "differ in size", "28x28", "24x20", "--image-size")
    assert not (root / "mixed").exists()

    code, _, err = cli(capsys, "datasets", "import", "images", tmp_path / "src", "--name", "mixed", "--image-size", "16",
                       "--data-root", root)
    assert code == 0, err
    x = load("mixed", "train", root).x.numpy()
    assert x.shape == (5, 16, 16, 3)  # one colour image: every image stored RGB
    assert (x[0, :, :, 0] == x[0, :, :, 1]).all() and (x[0, :, :, 1] == x[0, :, :, 2]).all()
    assert not (x[4, :, :, 0] == x[4, :, :, 1]).all()

    code, _, err = cli(capsys, "datasets", "import", "images", tmp_path / "src", "--name", "mixed_grey", "--image-size",
                       "16", "--channels", "1", "--data-root", root)
    assert code == 0, err
    assert load("mixed_grey", "train", root).x.shape == (5, 16, 16)


def test_images_bad_files_are_all_reported_by_path_and_nothing_is_written(tmp_path, capsys):
    root = tmp_path / "root"
    image_folder(tmp_path / "src", {"a": 2, "b": 2})
    (tmp_path / "src" / "a" / "notes.png").write_text("not an image")
    good = (tmp_path / "src" / "b" / "00.png").read_bytes()
    (tmp_path / "src" / "b" / "cut.png").write_bytes(good[: len(good) // 2])
    code, _, err = cli(capsys, "datasets", "import", "images", tmp_path / "src", "--name", "broken", "--data-root", root)
    assert_error(code, err, "2 bad files", "a/notes.png", "b/cut.png", "nothing was imported")
    assert not root.exists() or list(root.iterdir()) == []


def test_a_second_part_must_have_the_same_classes(tmp_path, capsys):
    root = tmp_path / "root"
    image_folder(tmp_path / "train", {"cat": 2, "dog": 2})
    image_folder(tmp_path / "test", {"cat": 2, "bird": 2})
    assert cli(capsys, "datasets", "import", "images", tmp_path / "train", "--name", "pets", "--data-root", root)[0] == 0
    before = snapshot(root)
    code, _, err = cli(capsys, "datasets", "import", "images", tmp_path / "test", "--name", "pets", "--part", "test",
                       "--data-root", root)
    assert_error(code, err, "bird, cat", "cat, dog", "same classes")
    assert snapshot(root) == before


# --- text ------------------------------------------------------------------------------------------------------


def test_text_csv_import_list_load_and_a_jsonl_part(tmp_path, capsys):
    root = tmp_path / "root"
    (tmp_path / "train.csv").write_text(
        'id,body,sentiment,lang\n'
        '1,"good, really",pos,en\n'
        '2,"bad\nacross two lines\tand a tab",neg,en\n'
        '3,meh,neutral,es\n'
        '4,great,pos,es\n', encoding="utf-8")
    code, out, err = cli(capsys, "datasets", "import", "text", tmp_path / "train.csv", "--name", "reviews",
                         "--text-column", "body", "--label-column", "sentiment", "--language-column", "lang",
                         "--data-root", root)
    assert code == 0, err
    assert "imported 4 text rows" in out
    stored = (root / "reviews" / "train.tsv").read_text(encoding="utf-8").splitlines()
    assert stored[0] == "label\ttext\tlanguage"
    assert stored[2] == "0\tbad across two lines and a tab\ten"  # class index; no tab or newline inside the text

    data = load("reviews", "train", root)
    assert data.classes == ["neg", "neutral", "pos"]
    assert data.y.tolist() == [2, 0, 1, 2]
    assert data.texts == ["good, really", "bad across two lines and a tab", "meh", "great"]
    assert data.languages == ["en", "en", "es", "es"]

    (tmp_path / "test.jsonl").write_text(
        '{"body": "fine", "sentiment": "pos", "lang": "en"}\n\n{"body": "awful", "sentiment": "neg", "lang": "es"}\n')
    code, _, err = cli(capsys, "datasets", "import", "text", tmp_path / "test.jsonl", "--name", "reviews", "--part",
                       "test", "--text-column", "body", "--label-column", "sentiment", "--language-column", "lang",
                       "--data-root", root)
    assert code == 0, err
    test = load("reviews", "test", root)
    assert test.y.tolist() == [2, 0] and test.classes == ["neg", "neutral", "pos"]  # the dataset's mapping, not [neg, pos]
    assert listed(capsys, root)["reviews"][1:5] == ["text", "3", "train,test", "all"]


def test_text_tsv_with_integer_labels_sorts_them_numerically(tmp_path, capsys):
    root = tmp_path / "root"
    (tmp_path / "t.tsv").write_text("label\ttext\n10\tten\n2\ttwo\n10\tdix\n")
    assert cli(capsys, "datasets", "import", "text", tmp_path / "t.tsv", "--name", "nums", "--data-root", root)[0] == 0
    data = load("nums", "train", root)
    assert data.classes == ["2", "10"] and data.y.tolist() == [1, 0, 1]
    assert (root / "nums" / "train.tsv").read_text().splitlines()[0] == "label\ttext"


def test_text_bad_rows_are_reported_together_by_line(tmp_path, capsys):
    root = tmp_path / "root"
    (tmp_path / "t.csv").write_text('text,label\n,a\n"two\nlines",b\n   ,a\nno label,\nalso fine,b\n')
    code, _, err = cli(capsys, "datasets", "import", "text", tmp_path / "t.csv", "--name", "bad", "--data-root", root)
    assert_error(code, err, "3 bad rows", "line 2: empty text", "line 5: empty text", "line 6: empty label")
    assert "line 3" not in err and "line 4" not in err and "line 7" not in err
    (tmp_path / "t.jsonl").write_text('{"text": "ok", "label": "a"}\n{"text": "ok", \n{"text": "x"}\n')
    code, _, err = cli(capsys, "datasets", "import", "text", tmp_path / "t.jsonl", "--name", "bad", "--data-root", root)
    assert_error(code, err, "line 2: not valid JSON", "line 3: no 'label' field")
    assert not root.exists() or list(root.iterdir()) == []


def test_text_second_part_with_an_unknown_label_is_refused_by_line(tmp_path, capsys):
    root = tmp_path / "root"
    (tmp_path / "a.csv").write_text("text,label\nx,yes\ny,no\n")
    (tmp_path / "b.csv").write_text("text,label\nz,no\nw,maybe\n")
    assert cli(capsys, "datasets", "import", "text", tmp_path / "a.csv", "--name", "yn", "--data-root", root)[0] == 0
    before = snapshot(root)
    code, _, err = cli(capsys, "datasets", "import", "text", tmp_path / "b.csv", "--name", "yn", "--part", "test",
                       "--data-root", root)
    assert_error(code, err, "line 3: label 'maybe' is not one of the dataset's classes (no, yes)")
    assert snapshot(root) == before


# --- audio -----------------------------------------------------------------------------------------------------


def test_audio_import_resamples_mixes_down_and_keeps_columns(tmp_path, capsys):
    root, clips = tmp_path / "root", tmp_path / "clips"
    a, b, c = tone(400, 0), tone(1600, 1), tone(300, 2)
    wav(clips / "a.wav", a, 8000)
    wav(clips / "sub" / "b.wav", b, 16000)
    wav(clips / "c.wav", np.stack([c, c // 2], axis=1), 8000)  # stereo
    (clips / "manifest.csv").write_text("path,label,transcript,speaker,age\n"
                                        "a.wav,yes,hello there,ann,31\nsub/b.wav,no,bye,bob,40\nc.wav,yes,again,ann,31\n")
    code, out, err = cli(capsys, "datasets", "import", "audio", clips, "--name", "talk", "--sample-rate", "8000",
                         "--data-root", root)
    assert code == 0, err
    assert "imported 3 audio rows" in out
    assert listed(capsys, root)["talk"][1:5] == ["audio", "2", "train", "all"]

    data = load("talk", "train", root)
    assert len(data) == 3 and data.sample_rate == 8000
    assert data.classes == ["no", "yes"] and data.y.tolist() == [1, 0, 1]
    assert data.data.lengths.tolist() == [400, 800, 300]  # 1600 samples at 16 kHz -> 800 at 8 kHz
    np.testing.assert_array_equal(np.round(data.data.row(0).numpy() * 32768).astype(np.int16), a)  # exact int16
    mixed = np.round(data.data.row(2).numpy() * 32768)
    np.testing.assert_allclose(mixed, (c.astype(np.float64) + c // 2) / 2, atol=1)
    assert list(data.extras["text"]) == ["hello there", "bye", "again"]
    assert list(data.extras["speaker"]) == ["ann", "bob", "ann"] and list(data.extras["age"]) == ["31", "40", "31"]
    with np.load(root / "talk" / "train.npz") as stored:
        assert stored["audio"].dtype == np.int16 and stored["sample_rate"].dtype == np.int64
    notes = (root / "talk" / "SOURCE.md").read_text()
    for text in (notes, out):  # the rates found, what they became, and the files mixed down
        assert "sample rates found: 8000 Hz (2 files), 16000 Hz (1 file); 1 file resampled to 8000 Hz" in text
        assert "channels: 1 file with more than one channel, averaged to mono: c.wav" in text
    assert "warning" not in err and "clipped" not in notes  # tone() is far below full scale


def test_audio_with_nan_infinite_or_no_samples_is_refused_by_line_and_nothing_is_written(tmp_path, capsys):
    root, clips = tmp_path / "root", tmp_path / "clips"
    wav(clips / "ok.wav", tone(300, 0), 8000)
    nan, inf = np.linspace(-0.5, 0.5, 300), np.linspace(-0.5, 0.5, 300)
    nan[[5, 6, 200]] = np.nan
    inf[10], inf[11] = np.inf, -np.inf
    for name, samples in (("nan.wav", nan), ("inf.wav", np.stack([inf, np.zeros(300)], axis=1)),
                          ("empty.wav", np.zeros(0))):
        soundfile.write(str(clips / name), samples, 8000, subtype="FLOAT")
    (clips / "manifest.csv").write_text("path,label\nok.wav,a\nnan.wav,a\ninf.wav,b\nempty.wav,b\n")
    code, out, err = cli(capsys, "datasets", "import", "audio", clips, "--name", "bad", "--data-root", root)
    assert_error(code, err, "3 bad rows", "line 3 (nan.wav): 3 of 300 samples are not finite",
                 "line 4 (inf.wav): 2 of 600 samples are not finite", "line 5 (empty.wav): no audio samples")
    assert "line 2" not in err and "imported" not in out
    assert not root.exists() or list(root.iterdir()) == []


def full_scale_tops(n: int, seed: int, runs: int, width: int) -> np.ndarray:
    """tone() with ``runs`` flat tops of ``width`` samples at +/- int16 full scale."""
    samples = tone(n, seed)
    for k in range(runs):
        start = (k + 1) * n // (runs + 1)
        samples[start:start + width] = 32767 if k % 2 else -32768
    return samples


def test_audio_clipped_files_are_kept_and_reported_and_single_peaks_are_not(tmp_path, capsys):
    root, clips = tmp_path / "root", tmp_path / "clips"
    flat = full_scale_tops(4000, 0, runs=2, width=3)  # 6 of 4000 samples (0.15 %) in runs of 3 at full scale
    peaks = full_scale_tops(4000, 1, runs=20, width=2)  # 40 full-scale samples, but no run of 3: a loud peak, no clip
    wav(clips / "flat.wav", flat, 8000)
    wav(clips / "peaks.wav", peaks, 8000)
    (clips / "manifest.csv").write_text("path,label\npeaks.wav,a\nflat.wav,b\n")
    code, out, err = cli(capsys, "datasets", "import", "audio", clips, "--name", "loud", "--data-root", root)
    assert code == 0, err
    assert err.count("warning: ") == 1 and "1 file looks clipped" in err and "flat.wav" in err
    assert "peaks.wav" not in err
    notes = (root / "loud" / "SOURCE.md").read_text()
    assert "- 1 file looks clipped" in notes and "kept unchanged: flat.wav\n" in notes
    data = load("loud", "train", root)  # kept sample for sample
    np.testing.assert_array_equal(np.round(data.data.row(1).numpy() * 32768).astype(np.int16), flat)


def test_audio_float_beyond_full_scale_is_scaled_by_its_peak_and_reported(tmp_path, capsys):
    root, clips = tmp_path / "root", tmp_path / "clips"
    rng = np.random.default_rng(5)
    loud, quiet = rng.uniform(-1, 1, 500), rng.uniform(-0.8, 0.8, 500)
    loud[100] = -2.5
    clips.mkdir()
    soundfile.write(str(clips / "loud.wav"), loud, 8000, subtype="FLOAT")
    soundfile.write(str(clips / "quiet.wav"), quiet, 8000, subtype="FLOAT")
    (clips / "manifest.csv").write_text("path,label\nquiet.wav,a\nloud.wav,b\n")
    code, out, err = cli(capsys, "datasets", "import", "audio", clips, "--name", "float", "--data-root", root)
    assert code == 0, err
    assert "warning: " in err and "beyond [-1, 1] scaled down" in err and "loud.wav (peak 2.5)" in err
    assert "quiet.wav" not in err
    assert "loud.wav (peak 2.5)" in (root / "float" / "SOURCE.md").read_text()
    data = load("float", "train", root)
    stored = [np.round(data.data.row(i).numpy() * 32768) for i in range(2)]
    np.testing.assert_allclose(stored[0], np.round(quiet.astype(np.float32) * 32768), atol=1)  # within +-1: as is
    np.testing.assert_allclose(stored[1], loud.astype(np.float32) / 2.5 * 32767, atol=1)  # the shape kept, not clipped
    assert stored[1].min() == -32767


def test_audio_with_transcripts_only_is_unlabelled(tmp_path, capsys):
    root, clips = tmp_path / "root", tmp_path / "clips"
    wav(clips / "a.wav", tone(500, 3), 16000)
    wav(clips / "b.wav", tone(700, 4), 16000)
    (clips / "list.csv").write_text("path,transcript\na.wav,one\nb.wav,two\n")
    code, _, err = cli(capsys, "datasets", "import", "audio", clips, "--manifest", clips / "list.csv", "--name", "asr",
                       "--data-root", root)
    assert code == 0, err
    manifest = json.loads((root / "asr" / "dataset.json").read_text())
    assert manifest["options"] == {"label_key": "y"} and manifest["classes"] == []
    data = load("asr", "train", root)
    assert data.y is None and data.sample_rate == 16000 and list(data.extras["text"]) == ["one", "two"]
    assert "(unlabelled) | 2" in (root / "asr" / "SOURCE.md").read_text()


def test_audio_bad_rows_are_reported_together_by_manifest_line(tmp_path, capsys):
    root, clips = tmp_path / "root", tmp_path / "clips"
    wav(clips / "a.wav", tone(400, 0), 8000)
    (clips / "junk.wav").write_text("RIFF? no")
    (clips / "manifest.csv").write_text("path,label\na.wav,x\ngone.wav,x\njunk.wav,y\na.wav,\ngone.wav,\n")
    code, _, err = cli(capsys, "datasets", "import", "audio", clips, "--name", "noisy", "--data-root", root)
    assert_error(code, err, "4 bad rows", "line 3 (gone.wav): file", "not found", "line 4 (junk.wav): cannot decode",
                 "line 5 (a.wav): empty label", "line 6 (gone.wav): empty label; file")
    assert "line 2" not in err
    assert not root.exists() or list(root.iterdir()) == []


# --- arrays ----------------------------------------------------------------------------------------------------


def features(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return (rng.standard_normal((n, 6)) + y[:, None]).astype(np.float32), y


def test_arrays_import_list_load_and_train(tmp_path, capsys):
    root = tmp_path / "root"
    classes = np.asarray(["low", "mid", "high"])
    for part, seed, n in (("train", 0, 30), ("test", 1, 12)):
        x, y = features(seed, n)
        np.savez(tmp_path / f"{part}.npz", x=x, y=y.astype(np.int32), classes=classes, ids=np.arange(n))
        code, _, err = cli(capsys, "datasets", "import", "arrays", tmp_path / f"{part}.npz", "--name", "feats",
                           "--part", part, "--data-root", root)
        assert code == 0, err
    assert listed(capsys, root)["feats"][1:5] == ["features", "3", "train,test", "all"]
    data = load("feats", "train", root)
    x, y = features(0, 30)
    np.testing.assert_array_equal(data.x.numpy(), x)
    assert data.y.dtype.is_floating_point is False and data.y.tolist() == y.tolist()
    assert data.classes == ["low", "mid", "high"] and data.extras["ids"].tolist() == list(range(30))

    config = tiny_train(tmp_path, "feats", "model: {backbone: mlp, bottleneck_dim: 8, mlp: {hidden: [16]}}\n")
    code, out, err = cli(capsys, "train", config, "--data-root", root, "--out", tmp_path / "run", "--no-progress")
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "result.json").read_text())["step"] == 4 and '"test_set": "feats/test"' in out

    np.savez(tmp_path / "other.npz", x=x, y=y, classes=np.asarray(["a", "b", "c"]))
    code, _, err = cli(capsys, "datasets", "import", "arrays", tmp_path / "other.npz", "--name", "feats", "--part",
                       "extra", "--data-root", root)
    assert_error(code, err, "differ from the dataset's classes")


def test_arrays_uint8_images_are_images_and_bad_labels_are_reported_by_row(tmp_path, capsys):
    root = tmp_path / "root"
    x = np.stack([grey(i, (8, 8)) for i in range(6)])
    np.savez(tmp_path / "img.npz", x=x, y=np.array([0, 1, 0, 1, 0, 1]))
    assert cli(capsys, "datasets", "import", "arrays", tmp_path / "img.npz", "--name", "tiny", "--data-root", root)[0] == 0
    assert json.loads((root / "tiny" / "dataset.json").read_text())["kind"] == "image"
    data = load("tiny", "train", root)
    assert data.num_classes == 2 and data.classes is None and tuple(data.x.shape) == (6, 8, 8)

    np.savez(tmp_path / "bad.npz", x=x, y=np.array([0, 1, 0, -1, 0, 2]))
    code, _, err = cli(capsys, "datasets", "import", "arrays", tmp_path / "bad.npz", "--name", "tiny", "--part", "test",
                       "--data-root", root)
    assert_error(code, err, "2 bad rows", "row 3: label -1", "row 5: label 2")
    assert sorted(p.name for p in (root / "tiny").iterdir()) == ["SOURCE.md", "dataset.json", "train.npz"]

    np.savez(tmp_path / "nan.npz", x=np.array([[0.0, 1.0], [np.nan, 2.0]], dtype=np.float32), y=np.array([0, 1]))
    code, _, err = cli(capsys, "datasets", "import", "arrays", tmp_path / "nan.npz", "--name", "nan", "--data-root", root)
    assert_error(code, err, "1 bad row", "row 1: x holds NaN")
    assert not (root / "nan").exists()


# --- every kind: an existing part is kept unless --overwrite ---------------------------------------------------


def _source(kind: str, tmp_path: Path, version: int) -> list[str]:
    """A small source of ``kind`` (``version`` changes its content) and the extra CLI arguments it needs."""
    folder = tmp_path / f"{kind}{version}"
    if kind == "images":
        image_folder(folder, {"a": 2, "b": 1 + version}, seed=version)
        return [str(folder)]
    if kind == "text":
        folder.mkdir()
        (folder / "t.csv").write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(3 + version)))
        return [str(folder / "t.csv")]
    if kind == "audio":
        for i in range(2 + version):
            wav(folder / f"{i}.wav", tone(200 + i, version * 10 + i), 8000)
        (folder / "manifest.csv").write_text("path,label\n" + "".join(f"{i}.wav,{'ab'[i % 2]}\n" for i in range(2 + version)))
        return [str(folder)]
    folder.mkdir()
    x, y = features(version, 4 + version)
    np.savez(folder / "a.npz", x=x, y=y)
    return [str(folder / "a.npz")]


@pytest.mark.parametrize("kind", importers.KINDS)
def test_an_existing_part_is_replaced_only_with_overwrite(kind, tmp_path, capsys):
    root = tmp_path / "root"
    assert cli(capsys, "datasets", "import", kind, *_source(kind, tmp_path, 0), "--name", "ds", "--data-root", root)[0] == 0
    first = len(load("ds", "train", root))
    before = snapshot(root)
    newer = _source(kind, tmp_path, 1)
    code, _, err = cli(capsys, "datasets", "import", kind, *newer, "--name", "ds", "--data-root", root)
    assert_error(code, err, "already has a part 'train'", "--overwrite")
    assert snapshot(root) == before

    code, _, err = cli(capsys, "datasets", "import", kind, *newer, "--name", "ds", "--overwrite", "--data-root", root)
    assert code == 0, err
    assert len(load("ds", "train", root)) == first + 1
    assert json.loads((root / "ds" / "dataset.json").read_text())["parts"] == ["train"]
    files = snapshot(root / "ds")
    assert sorted(files) == ["SOURCE.md", "dataset.json", f"train{'.tsv' if kind == 'text' else '.npz'}"]
    source = files["SOURCE.md"].decode()
    assert source.count("## Part `train`") == 1 and "--overwrite" in source
    for name, content in files.items():
        if name != "SOURCE.md":
            assert f"{hashlib.sha256(content).hexdigest()}  {name}" in source


@pytest.mark.parametrize("adding", [False, True])
def test_a_failed_write_leaves_nothing_behind(adding, tmp_path, capsys, monkeypatch):
    root = tmp_path / "root"
    image_folder(tmp_path / "src", {"a": 2, "b": 2})
    if adding:
        assert cli(capsys, "datasets", "import", "images", tmp_path / "src", "--name", "ds", "--data-root", root)[0] == 0
    before = snapshot(root) if root.exists() else {}

    def broken(prepared, handle):
        handle.write(b"half a part")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(importers, "_write_part", broken)
    code, _, err = cli(capsys, "datasets", "import", "images", tmp_path / "src", "--name", "ds", "--part", "test",
                       "--data-root", root)
    assert_error(code, err, "No space left on device")
    assert (snapshot(root) if root.exists() else {}) == before  # no temporary file or folder either


def test_names_that_are_taken_or_unsafe_are_refused(tmp_path, capsys):
    root = tmp_path / "root"
    image_folder(tmp_path / "src", {"a": 1, "b": 1})
    code, _, err = cli(capsys, "datasets", "import", "images", tmp_path / "src", "--name", "mnist", "--data-root", root)
    assert_error(code, err, "built-in dataset")
    (root / "mine").mkdir(parents=True)
    code, _, err = cli(capsys, "datasets", "import", "images", tmp_path / "src", "--name", "mine", "--data-root", root)
    assert_error(code, err, "not an imported dataset")
    code, _, err = cli(capsys, "datasets", "import", "images", tmp_path / "src", "--name", "../up", "--data-root", root)
    assert_error(code, err, "plain file name")
    assert [p.name for p in root.iterdir()] == ["mine"] and not (tmp_path / "up").exists()


def test_list_survives_a_broken_manifest(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "dataset.json").write_text("{not json")
    code, out, err = cli(capsys, "datasets", "list", "--data-root", tmp_path)
    assert code == 0 and "mnist" in out
    assert "warning:" in err and "junk" in err
