"""Bring your own data into the prepared layout: ``transferlab datasets import KIND SOURCE --name NAME``.

Four kinds of source (docs/importing.md):

* ``images``: a folder with one sub-folder per class -> ``<part>.npz`` (uint8 ``x``, int64 ``y``, ``classes``);
* ``text``: a CSV, TSV or JSONL file with a text and a label column -> ``<part>.tsv`` (``label<TAB>text[<TAB>language]``);
* ``audio``: a folder of audio files and a manifest CSV -> ``<part>.npz`` in the speech layout (int16, concatenated);
* ``arrays``: an ``.npz`` with ``x``/``y`` (and ``classes``) -> ``<part>.npz``, checked as the loader checks it.

Each import writes ``<data root>/<name>/`` with the part, a ``dataset.json`` manifest (so :func:`.datasets.lookup`
and :func:`.datasets.load` find it by name) and a ``SOURCE.md`` (origin, date, command, counts per class, sha256 of
every other file). Everything is read and checked before anything is written; every bad row is collected and
reported in one :class:`~transferlab.errors.DataError` with its line number or path. A new dataset is written into a
temporary folder next to the target and renamed into place; a part added to an existing dataset is written to
temporary files that replace the targets, so an import either happens completely or leaves nothing behind.
"""

from __future__ import annotations

import csv
import json
import os
import re
import secrets
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .datasets import DATASETS, MANIFEST, SUFFIXES, _check_arrays, read_manifest, read_npz
from .fetch import sha256_file
from .modality import resample
from .root import data_root

KINDS = ("images", "text", "audio", "arrays")
"""What ``transferlab datasets import`` takes; each maps to a dataset kind and a stored format (:data:`LAYOUT`)."""

LAYOUT = {"images": ("image", "npz"), "text": ("text", "tsv"), "audio": ("audio", "audio")}
"""kind of source -> (dataset kind, format); ``arrays`` is ``image`` or ``features`` by its ``x``, format ``npz``."""

SOURCE_FILE = "SOURCE.md"
MAX_REPORTED = 100
"""Bad rows listed in one error (all are counted)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_AUDIO_RESERVED = ("audio", "offsets", "lengths", "sample_rate", "y", "text")


@dataclass
class ImportResult:
    """What an import wrote: ``folder`` holds ``part``; ``counts`` maps class name -> rows (``None`` key: unlabelled)."""

    name: str
    part: str
    kind: str
    folder: Path
    rows: int
    classes: list[str]
    counts: dict[str | None, int]
    new_dataset: bool
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Prepared:
    """One part, read and checked, ready to write: ``arrays`` for npz formats or ``text`` for tsv."""

    kind: str
    format: str
    classes: list[str]
    y: np.ndarray | None
    arrays: dict[str, np.ndarray] | None = None
    text: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    named: bool = True
    """Whether ``classes`` are real names (``arrays`` without a ``classes`` array: indices only, not stored)."""
    notes: list[str] = field(default_factory=list)
    """Facts for SOURCE.md (sizes, rates, channels)."""
    warnings: list[str] = field(default_factory=list)
    """Notes the user should see now (clipped or rescaled audio): also in ``notes``, and printed to stderr as
    ``warning: ...`` once the import is written."""


class _Problems:
    """Bad rows, collected so that all of them are reported in one error."""

    def __init__(self, where: str, noun: str = "row") -> None:
        self.where, self.noun = where, noun
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def check(self) -> None:
        if not self.items:
            return
        shown = self.items[:MAX_REPORTED]
        more = f"\n  ... and {len(self.items) - len(shown)} more" if len(self.items) > len(shown) else ""
        rows = self.noun if len(self.items) == 1 else f"{self.noun}s"
        raise DataError(f"{len(self.items)} bad {rows} in {self.where}; nothing was imported. Fix or remove them and "
                        f"run the import again:\n  " + "\n  ".join(shown) + more)


# --- classes ---------------------------------------------------------------------------------------------------


def sorted_classes(names) -> list[str]:
    """Class names in label order: sorted, numerically when every name is an integer (``2`` before ``10``)."""
    names = set(names)
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def _label_mapping(found: list[str], existing: list[str] | None) -> list[str]:
    """The classes of the part: the existing dataset's (labels are mapped through them) or the sorted names found."""
    return list(existing) if existing is not None else sorted_classes(found)


# --- images ----------------------------------------------------------------------------------------------------


def _pixels(image) -> np.ndarray:
    """A decoded image as uint8 ``(H, W)`` grey or ``(H, W, 3)`` colour, turned upright by its EXIF orientation.
    Colour: any mode with colour bands (RGB, RGBA, CMYK, YCbCr, a palette); 16-bit grey (``I;16``) keeps its top
    8 bits; alpha is dropped."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)  # camera photos: the orientation their EXIF tag says
    if image.mode.startswith("I;16"):
        return (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
    colour = bool(set(image.getbands()) - {"L", "A", "1", "I", "F", "P"}) or image.mode in ("P", "PA")
    return np.asarray(image.convert("RGB" if colour else "L"), dtype=np.uint8)


def read_images(source: Path, *, image_size: int | None = None, channels: int | None = None,
                existing: list[str] | None = None) -> _Prepared:
    """A folder with one sub-folder per class (names sorted = labels 0..K-1), every non-hidden file in it an image."""
    from PIL import Image, UnidentifiedImageError

    if not source.is_dir():
        raise DataError(f"{source} is not a folder; `import images` takes a folder with one sub-folder per class")
    if channels not in (None, 1, 3):
        raise DataError(f"--channels must be 1 or 3; got {channels}")
    if image_size is not None and image_size < 1:
        raise DataError(f"--image-size must be a positive number of pixels; got {image_size}")
    folders = {p.name: p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if not folders:
        raise DataError(f"{source} has no class sub-folders; put the images of each class in a sub-folder named "
                        f"after the class ({source}/cat/1.png, {source}/dog/7.jpg, ...)")
    if existing is not None and set(folders) != set(existing):
        raise DataError(f"the class sub-folders of {source} ({', '.join(sorted_classes(folders))}) differ from the "
                        f"classes of the dataset's other parts ({', '.join(existing)}); every part must have the "
                        f"same classes, so that label k means the same class in each")
    classes = _label_mapping(list(folders), existing)
    problems = _Problems(str(source), "file")
    pixels: list[np.ndarray] = []
    labels: list[int] = []
    paths: list[str] = []
    sizes: dict[tuple[int, int], str] = {}
    colour = False
    for label, name in enumerate(classes):
        files = sorted(p for p in folders[name].rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(source).parts))
        for path in files:
            where = path.relative_to(source).as_posix()
            try:
                with Image.open(path) as image:
                    image.load()
                    array = _pixels(image)
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
                problems.add(f"{where}: cannot decode as an image ({type(exc).__name__}: {exc})")
                continue
            colour = colour or array.ndim == 3
            sizes.setdefault((array.shape[1], array.shape[0]), where)
            if image_size is not None and array.shape[:2] != (image_size, image_size):
                resized = Image.fromarray(array).resize((image_size, image_size), Image.Resampling.BILINEAR)
                array = np.asarray(resized, dtype=np.uint8)
            pixels.append(array)
            labels.append(label)
            paths.append(where)
    problems.check()
    if not pixels:
        raise DataError(f"{source}: the class sub-folders hold no image files")
    if image_size is None and len(sizes) > 1:
        examples = ", ".join(f"{w}x{h} ({path})" for (w, h), path in list(sizes.items())[:5])
        raise DataError(f"the images of {source} differ in size: {examples}{', ...' if len(sizes) > 5 else ''}. "
                        f"Pass --image-size N to resize them all to NxN")
    channels = channels or (3 if colour else 1)
    x = np.stack([_to_channels(p, channels) for p in pixels])
    y = np.asarray(labels, dtype=np.int64)
    height, width = x.shape[1:3]
    notes = [f"images: {len(x)}, stored {height}x{width}, {'RGB' if channels == 3 else 'grey'} uint8"
             + (f" (resized to {image_size}x{image_size}, bilinear)" if image_size is not None else "")]
    return _Prepared("image", "npz", classes, y, arrays={"x": x, "y": y, "classes": np.asarray(classes, dtype=str),
                                                          "names": np.asarray(paths, dtype=str)}, notes=notes)


def _to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    if channels == 3:
        return pixels if pixels.ndim == 3 else np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.ndim == 2:
        return pixels
    from PIL import Image

    return np.asarray(Image.fromarray(pixels, "RGB").convert("L"), dtype=np.uint8)


# --- text ------------------------------------------------------------------------------------------------------


def _records(path: Path, columns: list[str]) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """``(line, {column: value}, problem)`` for every non-blank record of a CSV/TSV (header = line 1) or JSONL file."""
    suffix = path.suffix.lower()
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            if suffix == ".jsonl":
                for lineno, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield lineno, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
                        continue
                    if not isinstance(record, dict):
                        yield lineno, None, f"a JSON {type(record).__name__}, not an object with {', '.join(columns)}"
                        continue
                    yield lineno, record, None
                return
            reader = csv.reader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataError(f"{path}: the header line (line 1) has no column {', '.join(map(repr, missing))}; it "
                                f"has {header}. Name the columns with --text-column / --label-column")
            start = reader.line_num + 1
            for row in reader:
                lineno, start = start, reader.line_num + 1
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    yield lineno, None, f"{len(row)} columns, the header has {len(header)}"
                    continue
                yield lineno, dict(zip(header, row)), None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}); save it as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{path}: cannot parse it as {suffix[1:].upper()} ({exc})") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _cell(record: dict[str, Any], column: str) -> str:
    value = record.get(column)
    return "" if value is None else str(value).strip()


def _flat(text: str) -> str:
    return re.sub(r"[\t\r\n]", " ", text)


def read_text(source: Path, *, text_column: str = "text", label_column: str = "label",
              language_column: str | None = None, existing: list[str] | None = None) -> _Prepared:
    """A CSV (``.csv``), TSV (``.tsv``) or JSONL (``.jsonl``) file; labels are strings mapped to sorted class names."""
    if not source.is_file():
        raise DataError(f"{source} is not a file; `import text` takes a .csv, .tsv or .jsonl file")
    if source.suffix.lower() not in (".csv", ".tsv", ".jsonl"):
        raise DataError(f"{source}: unknown text format {source.suffix!r}; name the file .csv, .tsv or .jsonl")
    columns = [text_column, label_column] + ([language_column] if language_column else [])
    problems = _Problems(str(source))
    rows: list[tuple[int, str, str, str]] = []
    for lineno, record, problem in _records(source, columns):
        if problem is not None:
            problems.add(f"line {lineno}: {problem}")
            continue
        text, label = _flat(_cell(record, text_column)), _cell(record, label_column)
        if label_column not in record:
            problems.add(f"line {lineno}: no {label_column!r} field")
        elif not label:
            problems.add(f"line {lineno}: empty label")
        elif existing is not None and label not in existing:
            problems.add(f"line {lineno}: label {label!r} is not one of the dataset's classes ({', '.join(existing)})")
        elif not text.strip():
            problems.add(f"line {lineno}: empty text")
        else:
            rows.append((lineno, label, text.strip(), _flat(_cell(record, language_column)) if language_column else ""))
    problems.check()
    if not rows:
        raise DataError(f"{source} holds no rows")
    classes = _label_mapping([label for _, label, _, _ in rows], existing)
    index = {name: i for i, name in enumerate(classes)}
    y = np.asarray([index[label] for _, label, _, _ in rows], dtype=np.int64)
    header = ["label", "text"] + (["language"] if language_column else [])
    lines = ["\t".join(header)]
    for (_, label, text, language), value in zip(rows, y):
        lines.append("\t".join([str(value), text] + ([language] if language_column else [])))
    notes = [f"text rows: {len(rows)} (tabs and line breaks inside a text replaced by spaces)"]
    return _Prepared("text", "tsv", classes, y, text="\n".join(lines) + "\n", notes=notes)


# --- audio -----------------------------------------------------------------------------------------------------


CLIP_LEVEL = 0.999
"""A sample with ``|x| >= CLIP_LEVEL`` (of full scale, 1.0) is at full scale."""
CLIP_RUN = 3
"""Full-scale samples count towards clipping only in runs of at least this many (same sign, one channel): one or two
samples at the top of a peak-normalised wave are not clipping, a flat top is."""
CLIP_FRACTION = 0.001
"""A file is reported as clipped when at least this fraction of its samples lie in such runs."""
FULL_SCALE = 32767 / 32768
"""The largest float that int16 stores without clipping; a float file beyond ±1 is scaled so its peak lands here."""
LISTED_FILES = 5
"""File names shown in one note or warning (all are counted)."""


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Every sample of ``path`` as float64 ``(frames, channels)`` in [-1, 1] full scale (float files as stored), and
    its rate."""
    import soundfile

    data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    return data, int(rate)


def _clipped_samples(data: np.ndarray) -> int:
    """How many samples of ``data`` ``(frames, channels)`` sit at full scale in runs of at least :data:`CLIP_RUN`."""
    total = 0
    for channel in data.T:
        for at_top in (channel >= CLIP_LEVEL, channel <= -CLIP_LEVEL):
            if not at_top.any():
                continue
            edges = np.diff(np.concatenate([[0], at_top.astype(np.int8), [0]]))
            runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
            total += int(runs[runs >= CLIP_RUN].sum())
    return total


def _some(names: list[str]) -> str:
    """The first :data:`LISTED_FILES` of ``names`` and how many more."""
    shown = ", ".join(names[:LISTED_FILES])
    return shown + (f" and {len(names) - LISTED_FILES} more" if len(names) > LISTED_FILES else "")


def _files(n: int) -> str:
    return f"{n} file{'' if n == 1 else 's'}"


def read_audio(source: Path, *, manifest: Path | None = None, sample_rate: int | None = None,
               existing: list[str] | None = None, labelled_before: bool | None = None) -> _Prepared:
    """A folder of audio files and a manifest CSV (``path``, ``label`` and/or ``transcript``, optional ``speaker``,
    other columns kept as strings); every file decoded, averaged to mono, resampled to one rate, stored int16.

    Bad audio (docs/importing.md, "Bad audio"): a file that cannot be decoded, has no samples or has NaN or infinite
    samples is a bad row. A float file whose mono mix goes beyond ±1 is divided by its peak (int16 cannot hold it;
    clipping would distort it). A file with runs of full-scale samples is kept as it is and listed as clipped.
    Multi-channel files, the rates found and the files resampled or scaled are listed in the notes (SOURCE.md);
    clipped and scaled files are also returned as warnings."""
    import soundfile

    if not source.is_dir():
        raise DataError(f"{source} is not a folder; `import audio` takes the folder of the audio files")
    manifest = manifest or source / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"manifest {manifest} not found; give a CSV with columns path and label and/or transcript "
                        f"(--manifest FILE, default <folder>/manifest.csv)")
    if sample_rate is not None and sample_rate < 1:
        raise DataError(f"--sample-rate must be a positive number of samples per second; got {sample_rate}")
    try:
        with open(manifest, encoding="utf-8-sig", newline="") as handle:
            delimiter = "\t" if manifest.suffix.lower() == ".tsv" else ","
            header = [h.strip() for h in next(csv.reader(handle, delimiter=delimiter), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read the manifest {manifest}: {exc}") from None
    if "path" not in header or not ({"label", "transcript"} & set(header)):
        raise DataError(f"{manifest}: the header line needs a 'path' column and a 'label' and/or 'transcript' column; "
                        f"it has {header}")
    labelled = "label" in header
    if labelled_before is not None and labelled != labelled_before:
        raise DataError(f"{manifest}: the dataset's other parts are {'' if labelled_before else 'un'}labelled; this "
                        f"manifest {'has' if labelled else 'has no'} 'label' column. Every part must have the same "
                        f"classes")
    keys = {"label": "y", "transcript": "text", "path": "path", "speaker": "speaker"}
    extra = [c for c in header if c and c not in keys]
    clash = [c for c in extra if c in _AUDIO_RESERVED]
    if clash:
        raise DataError(f"{manifest}: column(s) {', '.join(clash)} would overwrite the arrays of the audio layout "
                        f"({', '.join(_AUDIO_RESERVED)}); rename them (the label column is 'label', the transcript "
                        f"'transcript')")
    problems = _Problems(str(manifest))
    clips: list[np.ndarray] = []
    records: list[dict[str, Any]] = []
    rates: Counter[int] = Counter()
    multichannel: list[str] = []
    clipped: list[str] = []
    scaled: list[str] = []  # "name (peak P)"
    target = sample_rate
    for lineno, record, problem in _records(manifest, ["path"]):
        if problem is not None:
            problems.add(f"line {lineno}: {problem}")
            continue
        relative = _cell(record, "path")
        label, transcript = _cell(record, "label"), _flat(_cell(record, "transcript"))
        where = f"line {lineno} ({relative or 'no path'})"
        if not relative:
            problems.add(f"line {lineno}: empty path")
            continue
        wrong = []  # everything wrong with this row, reported as one bad row
        if labelled and not label:
            wrong.append("empty label")
        elif labelled and existing is not None and label not in existing:
            wrong.append(f"label {label!r} is not one of the dataset's classes ({', '.join(existing)})")
        if "transcript" in header and not transcript.strip():
            wrong.append("empty transcript")
        path = source / relative
        data, rate = np.zeros((0, 1)), 0
        if not path.is_file():
            wrong.append(f"file {path} not found")
        else:
            try:
                data, rate = _decode(path)
            except (soundfile.SoundFileError, RuntimeError, OSError, ValueError, EOFError) as exc:
                wrong.append(f"cannot decode as audio ({type(exc).__name__}: {str(exc).strip()})")
            else:
                bad = data.size - int(np.isfinite(data).sum())
                if data.size == 0:
                    wrong.append("no audio samples")
                elif bad:
                    wrong.append(f"{bad} of {data.size} samples are not finite (NaN or infinite); a float file "
                                 f"holds them, replace or drop it")
        if wrong:
            problems.add(f"{where}: {'; '.join(wrong)}")
            continue
        rates[rate] += 1
        target = target or rate
        if data.shape[1] > 1:
            multichannel.append(relative)
        samples = data.mean(axis=1)
        peak = float(np.abs(samples).max())
        if peak > 1.0:  # only float files go beyond full scale: scale the whole file down rather than clip it
            samples = samples * (FULL_SCALE / peak)
            scaled.append(f"{relative} (peak {peak:.3g})")
        elif np.abs(data).max() <= 1.0 and _clipped_samples(data) >= max(1, CLIP_FRACTION * data.size):
            # (a float channel beyond ±1 has no full scale to be clipped at)
            clipped.append(relative)
        samples = resample(samples, rate, target)
        clips.append(np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16))
        records.append({**record, "label": label, "transcript": transcript.strip(), "path": relative})
    problems.check()
    if not clips:
        raise DataError(f"{manifest} lists no audio files")
    lengths = np.asarray([len(c) for c in clips], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    arrays: dict[str, np.ndarray] = {"audio": np.concatenate(clips), "offsets": offsets, "lengths": lengths,
                                     "sample_rate": np.asarray(target, dtype=np.int64)}
    classes: list[str] = []
    y = None
    if labelled:
        classes = _label_mapping([r["label"] for r in records], existing)
        index = {name: i for i, name in enumerate(classes)}
        y = arrays["y"] = np.asarray([index[r["label"]] for r in records], dtype=np.int64)
    if "transcript" in header:
        arrays["text"] = np.asarray([r["transcript"] for r in records], dtype=str)
    arrays["path"] = np.asarray([r["path"] for r in records], dtype=str)
    for column in (["speaker"] if "speaker" in header else []) + extra:
        arrays[column] = np.asarray([_cell(r, column) for r in records], dtype=str)
    seconds = lengths.sum() / target
    resampled = sum(n for r, n in rates.items() if r != target)
    found = ", ".join(f"{r} Hz ({_files(n)})" for r, n in sorted(rates.items()))
    notes = [f"utterances: {len(clips)}, {seconds:.1f} s, stored mono int16 at {target} Hz",
             f"sample rates found: {found}; "
             + (f"{_files(resampled)} resampled to {target} Hz with scipy.signal.resample_poly" if resampled
                else "none resampled"),
             f"channels: {_files(len(multichannel))} with more than one channel, averaged to mono"
             + (f": {_some(multichannel)}" if multichannel else "")]
    warnings = []
    if scaled:
        warnings.append(f"{_files(len(scaled))} with float samples beyond [-1, 1] scaled down by the peak to fit "
                        f"int16 (the whole file, so it is quieter than the source): {_some(scaled)}")
    if clipped:
        verb = "looks" if len(clipped) == 1 else "look"
        warnings.append(f"{_files(len(clipped))} {verb} clipped (at least {CLIP_FRACTION:.1%} of the samples in "
                        f"runs at full scale); kept unchanged: {_some(clipped)}")
    notes += warnings + [f"manifest: {manifest.resolve()}"]
    return _Prepared("audio", "audio", classes, y, arrays=arrays, options={"label_key": "y"}, notes=notes,
                     warnings=warnings)


# --- arrays ----------------------------------------------------------------------------------------------------


def read_arrays(source: Path, *, existing: list[str] | None = None, existing_kind: str | None = None,
                existing_num_classes: int | None = None) -> _Prepared:
    """An ``.npz`` with ``x`` and ``y`` (optional ``classes``, other arrays kept), checked as :func:`.load` checks."""
    if not source.is_file():
        raise DataError(f"{source} is not a file; `import arrays` takes an .npz file with arrays x and y")
    arrays = read_npz(source)
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"{source} must hold arrays 'x' and 'y'; it has {sorted(arrays)}")
    x, y = arrays["x"], arrays["y"]
    kind = "image" if x.dtype == np.uint8 and x.ndim in (3, 4) else "features"
    _check_arrays(str(source), kind, x, y)
    if existing_kind is not None and kind != existing_kind:
        raise DataError(f"{source} holds {kind} data (x {x.dtype} {x.shape}); the dataset's other parts hold "
                        f"{existing_kind} data. Import it under another --name")
    if len(x) != len(y):
        raise DataError(f"{source}: x has {len(x)} rows but y has {len(y)}")
    names = None
    if "classes" in arrays:
        names = [str(c) for c in np.atleast_1d(arrays["classes"])]
        if arrays["classes"].ndim != 1 or len(set(names)) != len(names) or not names:
            raise DataError(f"{source}: classes must be a (K,) array of distinct names; got {names[:10]}")
        if existing and names != list(existing) or not existing and existing_num_classes not in (None, len(names)):
            before = list(existing) if existing else f"{existing_num_classes} unnamed classes"
            raise DataError(f"{source}: classes {names} differ from the dataset's classes ({before}); every part "
                            f"must have the same classes in the same order")
    limit = len(names) if names else (existing_num_classes if existing_num_classes is not None else None)
    problems = _Problems(str(source))
    for row in np.flatnonzero((y < 0) | (y >= limit if limit is not None else False)):
        problems.add(f"row {row}: label {y[row]} outside 0..{limit - 1 if limit is not None else 'K-1'}")
    if kind == "features" and x.dtype.kind == "f":
        for row in np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1)):
            problems.add(f"row {row}: x holds NaN or infinite values")
    problems.check()
    if len(y) == 0:
        raise DataError(f"{source} holds no rows")
    num_classes = limit if limit is not None else int(y.max()) + 1
    classes = names or (list(existing) if existing else [str(k) for k in range(num_classes)])
    out = dict(arrays)
    out["y"] = y.astype(np.int64)
    if names is not None:
        out["classes"] = np.asarray(names, dtype=str)
    notes = [f"x {x.dtype} {tuple(x.shape)} ({kind}); arrays {', '.join(sorted(arrays))}"]
    return _Prepared(kind, "npz", classes, out["y"], arrays=out, named=names is not None or bool(existing), notes=notes)


# --- writing ---------------------------------------------------------------------------------------------------


def _check_name(value: str, what: str) -> None:
    if not _NAME.match(value):
        raise DataError(f"{what} {value!r} must be a plain file name: letters, digits, '_', '-', '.', not starting "
                        f"with '.' or '-'")


def _write_part(prepared: _Prepared, handle) -> None:
    if prepared.text is not None:
        handle.write(prepared.text.encode("utf-8"))
    else:
        np.savez_compressed(handle, **prepared.arrays)


def _section(part: str, source: Path, command: str, prepared: _Prepared, counts: dict[str | None, int]) -> str:
    lines = [f"## Part `{part}`", "",
             f"- origin: `{source.resolve()}`",
             f"- imported: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
             f"- command: `{command}`",
             f"- stored as: `{part}{SUFFIXES[prepared.format]}` ({prepared.kind}, format {prepared.format})"]
    lines += [f"- {note}" for note in prepared.notes]
    lines += ["", "| label | class | count |", "|---|---|---|"]
    if None in counts:
        lines.append(f"| - | (unlabelled) | {counts[None]} |")
    for index, name in enumerate(prepared.classes):
        if name in counts:
            lines.append(f"| {index} | {name} | {counts[name]} |")
    lines.append(f"| | total | {sum(counts.values())} |")
    return "\n".join(lines) + "\n"


def _source_md(folder: Path, name: str, sections: dict[str, str], staged: dict[str, Path] | None = None) -> str:
    """SOURCE.md: one section per imported part, then the sha256 of every other file in ``folder`` as it will be once
    the ``staged`` temporary files (target name -> temporary path) replace their targets."""
    files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*")
             if p.is_file() and p.name != SOURCE_FILE and not p.name.startswith(".")}
    files.update(staged or {})
    digest = [f"{sha256_file(p)}  {rel}  ({p.stat().st_size} bytes)" for rel, p in sorted(files.items())]
    return "\n".join([
        f"# {name} (imported)", "",
        "Brought in with `transferlab datasets import` (see docs/importing.md); one section per part.", "",
        *sections.values(),
        "## sha256", "", "sha256 of every file in this folder except this SOURCE.md (paths relative to this folder):",
        "", "```", *digest, "```", ""])


def _read_sections(path: Path) -> dict[str, str]:
    """The per-part sections of an existing SOURCE.md (``## Part `name` ``), to keep when another part is added."""
    if not path.is_file():
        return {}
    sections: dict[str, str] = {}
    current: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        match = re.match(r"^## Part `(.+)`\s*$", line)
        if match:
            current = match.group(1)
            sections[current] = line
        elif line.startswith("## "):
            current = None
        elif current is not None:
            sections[current] += line
    return sections


def _counts(prepared: _Prepared) -> dict[str | None, int]:
    if prepared.y is None:
        rows = len(prepared.arrays["lengths"]) if prepared.arrays is not None else 0
        return {None: rows}
    tally = Counter(int(v) for v in prepared.y)
    return {prepared.classes[k]: tally[k] for k in range(len(prepared.classes)) if tally[k]}


def import_dataset(kind: str, source: str | Path, name: str, *, root: str | Path | None = None, part: str = "train",
                   overwrite: bool = False, description: str | None = None, command: str | None = None,
                   **options: Any) -> ImportResult:
    """Import ``source`` as part ``part`` of the user dataset ``name`` under the data root (see the module doc).

    ``options`` are the kind's settings: ``image_size``/``channels`` (images), ``text_column``/``label_column``/
    ``language_column`` (text), ``manifest``/``sample_rate`` (audio). A second part must use the same classes as the
    dataset's parts so far; an existing part is replaced only with ``overwrite``."""
    if kind not in KINDS:
        raise DataError(f"unknown kind of import {kind!r}; choose one of {', '.join(KINDS)}")
    _check_name(name, "--name")
    _check_name(part, "--part")
    if name in DATASETS:
        raise DataError(f"{name!r} is the name of a built-in dataset; choose another --name for your data")
    source = Path(source).expanduser()
    if not source.exists():
        raise DataError(f"{source} does not exist")
    base = data_root(root)
    folder = base / name
    command = command or f"transferlab datasets import {kind} {source} --name {name} --part {part}"

    meta: dict[str, Any] | None = None
    if folder.exists():
        if not (folder / MANIFEST).is_file():
            raise DataError(f"{folder} exists and is not an imported dataset (it has no {MANIFEST}); choose another "
                            f"--name, or move that folder away")
        info = read_manifest(folder)  # a broken manifest -> DataError saying so
        meta = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        fits = (info.format == "npz" and info.kind in ("image", "features")) if kind == "arrays" \
            else (info.kind, info.format) == LAYOUT[kind]
        if not fits:
            raise DataError(f"dataset {name!r} under {base} holds {info.kind} data (format {info.format}); `import "
                            f"{kind}` cannot add a part to it. Import this data under another --name")
        target = folder / f"{part}{SUFFIXES[info.format]}"
        if (part in info.parts or target.exists()) and not overwrite:
            raise DataError(f"dataset {name!r} already has a part {part!r} ({target}); pass --overwrite to replace it, "
                            f"or import into another --part")
        only_part = set(info.parts) <= {part}
        existing = None if only_part else (list(info.classes) if info.classes else [])
        existing_kind = None if only_part else info.kind
        num_classes = None if only_part else info.num_classes
        labelled_before = None if only_part else bool(info.classes)
    else:
        existing = existing_kind = num_classes = labelled_before = None

    if kind == "images":
        prepared = read_images(source, image_size=options.get("image_size"), channels=options.get("channels"),
                               existing=existing)
    elif kind == "text":
        prepared = read_text(source, text_column=options.get("text_column") or "text",
                             label_column=options.get("label_column") or "label",
                             language_column=options.get("language_column"), existing=existing)
    elif kind == "audio":
        manifest = options.get("manifest")
        prepared = read_audio(source, manifest=Path(manifest).expanduser() if manifest else None,
                              sample_rate=options.get("sample_rate"), existing=existing or None,
                              labelled_before=labelled_before)
    else:
        prepared = read_arrays(source, existing=existing, existing_kind=existing_kind,
                               existing_num_classes=num_classes)
    counts = _counts(prepared)
    num = len(prepared.classes) if prepared.classes else 1
    manifest = {
        "kind": prepared.kind, "format": prepared.format, "num_classes": num,
        "classes": prepared.classes if prepared.named else [],
        "parts": [part], "description": description or f"imported from {source.resolve()} ({kind})",
        "options": prepared.options,
    }
    if meta is not None and existing is not None:  # another part of the same dataset: keep what it says
        manifest = {**meta, "parts": list(meta["parts"]) + ([part] if part not in meta["parts"] else [])}
        if description:
            manifest["description"] = description
    elif meta is not None:  # replacing the only part: keep its place in the list and the description
        manifest["parts"] = list(meta["parts"]) or [part]
        manifest["description"] = description or meta.get("description") or manifest["description"]

    section = _section(part, source, command, prepared, counts)
    filename = f"{part}{SUFFIXES[prepared.format]}"
    try:
        if meta is None:
            _write_new(base, folder, name, filename, prepared, manifest, {part: section})
        else:
            sections = _read_sections(folder / SOURCE_FILE)
            sections[part] = section
            _write_into(folder, name, filename, prepared, manifest, sections)
    except OSError as exc:
        raise DataError(f"cannot write the dataset under {base}: {exc}") from None
    rows = sum(counts.values())
    for warning in prepared.warnings:
        print(f"warning: {name}/{part}: {warning}", file=sys.stderr)
    return ImportResult(name, part, prepared.kind, folder, rows, list(prepared.classes), counts, meta is None,
                        prepared.notes, prepared.warnings)


def _manifest_text(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def _write_new(base: Path, folder: Path, name: str, filename: str, prepared: _Prepared, manifest: dict[str, Any],
               sections: dict[str, str]) -> None:
    """A new dataset: everything into a temporary folder next to the target, then one rename."""
    base.mkdir(parents=True, exist_ok=True)
    temp = base / f".{name}.{secrets.token_hex(4)}.importing"
    try:
        temp.mkdir()  # the usual permissions (mkdtemp's would be owner-only)
        with open(temp / filename, "wb") as handle:
            _write_part(prepared, handle)
        (temp / MANIFEST).write_text(_manifest_text(manifest), encoding="utf-8")
        (temp / SOURCE_FILE).write_text(_source_md(temp, name, sections), encoding="utf-8")
        if folder.exists():
            raise DataError(f"{folder} appeared while importing (another import?); nothing was written")
        os.rename(temp, folder)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _write_into(folder: Path, name: str, filename: str, prepared: _Prepared, manifest: dict[str, Any],
                sections: dict[str, str]) -> None:
    """A part added to an existing dataset: temporary files in its folder, each replacing its target at the end (the
    part first: until the manifest names it, the loader does not see it)."""
    temps: list[Path] = []

    def temp_for(target: str, write: Callable[[Any], None]) -> Path:
        path = folder / f".{target}.{secrets.token_hex(4)}.importing"
        with open(path, "xb") as handle:  # the usual permissions (mkstemp's would be owner-only)
            temps.append(path)
            write(handle)
        return path

    try:
        part_tmp = temp_for(filename, lambda h: _write_part(prepared, h))
        manifest_tmp = temp_for(MANIFEST, lambda h: h.write(_manifest_text(manifest).encode("utf-8")))
        # SOURCE.md lists the sha256 of the files as they will be: hash the new part and manifest, not the old ones
        staged = {filename: part_tmp, MANIFEST: manifest_tmp}
        source_text = _source_md(folder, name, sections, staged)
        source_tmp = temp_for(SOURCE_FILE, lambda h: h.write(source_text.encode("utf-8")))
        os.replace(part_tmp, folder / filename)
        os.replace(manifest_tmp, folder / MANIFEST)
        os.replace(source_tmp, folder / SOURCE_FILE)
    except BaseException:
        for path in temps:
            path.unlink(missing_ok=True)
        raise
