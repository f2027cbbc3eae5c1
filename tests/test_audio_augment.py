"""Adult-to-child speech augmentation and child-to-adult normalisation (transferlab.data.audio_augment), on
synthetic tones: every frequency check measures the dominant FFT peak or the estimated f0 of the output."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from transferlab.data.audio_augment import (
    AudioAugment, AugmentStep, _unwarp, _warp, add_noise, change_speed, change_tempo, estimate_f0, normalize_toward,
    pitch_shift, vtlp,
)
from transferlab.errors import DataError


def tone(freq: float, sample_rate: int, seconds: float = 1.0, harmonics: int = 1) -> torch.Tensor:
    """A harmonic complex: ``harmonics`` equal-amplitude sines at freq, 2·freq, ..."""
    t = torch.arange(int(sample_rate * seconds), dtype=torch.float64) / sample_rate
    wave = sum(torch.sin(2 * math.pi * freq * k * t + 0.3 * k) for k in range(1, harmonics + 1))
    return (0.3 * wave / harmonics).float()


def peak_hz(wave: torch.Tensor, sample_rate: int) -> float:
    """The frequency of the largest FFT peak (Hann window, 4x zero-padding)."""
    n = wave.shape[-1]
    spectrum = torch.fft.rfft(wave.double() * torch.hann_window(n, dtype=torch.float64), n=4 * n).abs()
    return float(spectrum.argmax()) * sample_rate / (4 * n)


def snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    clean, noise = clean.double(), noisy.double() - clean.double()
    return 10 * math.log10(float(clean.pow(2).sum() / noise.pow(2).sum()))


# ------------------------------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("sample_rate", [16000, 8000])
@pytest.mark.parametrize("alpha", [1.2, 0.8])
def test_vtlp_scales_a_tone_below_the_boundary_by_alpha(sample_rate, alpha):
    wave = tone(500, sample_rate)
    out = vtlp(wave, sample_rate, alpha)
    assert out.shape == wave.shape and out.dtype == wave.dtype
    assert peak_hz(out, sample_rate) == pytest.approx(500 * alpha, rel=0.02)
    # the level is kept
    assert out.pow(2).mean().sqrt() == pytest.approx(float(wave.pow(2).mean().sqrt()), rel=0.01)


def test_vtlp_upper_band_maps_nyquist_to_itself():
    # 16 kHz, alpha 1.2: the boundary is 4800/1.2 = 4000 Hz; above it f -> 8000 - (8000-4800)/(8000-4000)·(8000-f)
    out = vtlp(tone(7000, 16000), 16000, 1.2)
    assert peak_hz(out, 16000) == pytest.approx(7200, rel=0.005)


@pytest.mark.parametrize("alpha", [1.25, 0.8])
def test_vtlp_warp_is_jaitly_hinton_piecewise_linear(alpha):
    nyquist, boundary = 8000.0, 4800.0
    low = boundary * min(alpha, 1) / alpha
    freqs = torch.tensor([0.0, 100.0, low, (low + nyquist) / 2, nyquist], dtype=torch.float64)
    warped = _warp(freqs, alpha, low, nyquist)
    slope = (nyquist - alpha * low) / (nyquist - low)
    expected = [0.0, 100 * alpha, alpha * low, alpha * low + slope * (nyquist - low) / 2, nyquist]
    torch.testing.assert_close(warped, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(_unwarp(warped, alpha, low, nyquist), freqs)


def test_vtlp_on_a_batch_matches_rows():
    waves = torch.stack([tone(300, 8000, 0.5), tone(450, 8000, 0.5)])
    out = vtlp(waves, 8000, 1.1)
    assert out.shape == waves.shape
    torch.testing.assert_close(out[1], vtlp(waves[1], 8000, 1.1), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("semitones, expected", [(12, 400.0), (-12, 100.0), (5, 200 * 2 ** (5 / 12))])
def test_pitch_shift_moves_the_tone_and_keeps_the_length(semitones, expected):
    wave = tone(200, 16000)
    out = pitch_shift(wave, 16000, semitones)
    assert out.shape == wave.shape
    assert peak_hz(out, 16000) == pytest.approx(expected, rel=0.03)


def test_pitch_shift_on_a_batch_and_at_8khz():
    waves = torch.stack([tone(200, 8000, 0.5), tone(300, 8000, 0.5)])
    out = pitch_shift(waves, 8000, 12)
    assert out.shape == waves.shape
    assert peak_hz(out[0], 8000) == pytest.approx(400, rel=0.03)
    assert peak_hz(out[1], 8000) == pytest.approx(600, rel=0.03)


def test_change_tempo_shortens_and_keeps_the_pitch():
    wave = tone(200, 16000)
    out = change_tempo(wave, 16000, 1.25)
    assert out.shape == (round(16000 / 1.25),)
    assert peak_hz(out, 16000) == pytest.approx(200, rel=0.03)
    slower = change_tempo(wave, 16000, 0.8)
    assert slower.shape == (round(16000 / 0.8),)
    assert peak_hz(slower, 16000) == pytest.approx(200, rel=0.03)


@pytest.mark.parametrize("change", [change_tempo, change_speed])
def test_tempo_and_speed_compress_the_time_axis(change):
    wave = torch.cat([tone(200, 8000, 0.5), torch.zeros(4000)])  # sound for 0.5 s, then 0.5 s of silence
    out = change(wave, 8000, 1.25)  # the sound now ends at 0.4 s = sample 3200
    assert out.shape == (6400,)
    assert out[2800:3100].pow(2).mean().sqrt() > 0.1
    assert out[3500:].pow(2).mean().sqrt() < 0.01


def test_change_speed_shortens_and_raises_the_pitch():
    wave = tone(200, 16000)
    out = change_speed(wave, 16000, 1.25)
    assert out.shape == (round(16000 / 1.25),)
    assert peak_hz(out, 16000) == pytest.approx(250, rel=0.03)
    odd = change_speed(wave, 16000, 1.0734)  # not a ratio of small whole numbers
    assert odd.shape == (round(16000 / 1.0734),)
    assert peak_hz(odd, 16000) == pytest.approx(200 * 1.0734, rel=0.03)


def test_add_noise_hits_the_snr():
    torch.manual_seed(0)
    wave = tone(200, 16000, harmonics=3)
    assert snr_db(wave, add_noise(wave, 10.0)) == pytest.approx(10.0, abs=0.1)
    # given (shorter) noise is tiled; each row of a batch gets the ratio
    noise = torch.randn(3000)
    batch = torch.stack([wave, 0.1 * tone(300, 16000)])
    out = add_noise(batch, 20.0, noise=noise)
    assert out.shape == batch.shape
    for row in range(2):
        assert snr_db(batch[row], out[row]) == pytest.approx(20.0, abs=0.1)
    added, tiled = out[0] - batch[0], noise.repeat(6)[:16000]
    scale = float(added @ tiled / (tiled @ tiled))
    torch.testing.assert_close(added, scale * tiled, atol=1e-5, rtol=1e-4)


def test_add_noise_generator_is_reproducible():
    wave = tone(200, 8000, 0.25)
    first = add_noise(wave, 5.0, generator=torch.Generator().manual_seed(3))
    again = add_noise(wave, 5.0, generator=torch.Generator().manual_seed(3))
    other = add_noise(wave, 5.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.parametrize("sample_rate", [16000, 8000])
@pytest.mark.parametrize("f0", [220.0, 120.0])
def test_estimate_f0_of_a_harmonic_complex(sample_rate, f0):
    assert estimate_f0(tone(f0, sample_rate, harmonics=5), sample_rate) == pytest.approx(f0, rel=0.02)


def test_estimate_f0_ignores_silence_around_the_voice():
    torch.manual_seed(0)
    voice = tone(180, 16000, 0.5, harmonics=5)
    wave = torch.cat([1e-4 * torch.randn(8000), voice, torch.zeros(8000)])
    assert estimate_f0(wave, 16000) == pytest.approx(180, rel=0.02)


def test_estimate_f0_skips_faint_periodic_frames():
    # a long faint 100 Hz hum (-50 dB) around a short loud 180 Hz voice: only the voice counts
    hum = 1e-3 * tone(100, 16000, 0.4)
    wave = torch.cat([hum, tone(180, 16000, 0.3, harmonics=5), hum])
    assert estimate_f0(wave, 16000) == pytest.approx(180, rel=0.02)


def test_estimate_f0_is_nan_without_voice():
    torch.manual_seed(0)
    assert math.isnan(estimate_f0(torch.zeros(16000), 16000))
    assert math.isnan(estimate_f0(1e-3 * torch.randn(16000), 16000))
    assert math.isnan(estimate_f0(torch.randn(8000), 8000))
    assert math.isnan(estimate_f0(tone(200, 16000, 0.03), 16000))  # shorter than one 50 ms frame


@pytest.mark.parametrize("formant_exponent", [1.0, 0.0])
def test_normalize_toward_reaches_the_target_f0(formant_exponent):
    wave = tone(300, 16000, harmonics=5)
    out, info = normalize_toward(wave, 16000, 150.0, formant_exponent=formant_exponent)
    assert out.shape == wave.shape
    assert info["f0"] == pytest.approx(300, rel=0.02)
    assert info["factor"] == pytest.approx(0.5, rel=0.02)
    assert info["semitones"] == pytest.approx(-12, abs=0.3)
    assert info["alpha"] == pytest.approx(0.5 ** formant_exponent, rel=0.02)
    assert estimate_f0(out, 16000) == pytest.approx(150, rel=0.05)


def test_normalize_toward_clips_the_factor_and_skips_unvoiced():
    wave = tone(100, 16000, 0.5, harmonics=5)
    out, info = normalize_toward(wave, 16000, 400.0, f0=100.0, max_factor=1.5)
    assert info["factor"] == pytest.approx(1.5) and info["alpha"] == pytest.approx(1.5)
    assert estimate_f0(out, 16000) == pytest.approx(150, rel=0.05)
    _, info = normalize_toward(wave, 16000, 50.0, f0=400.0, formant_exponent=0.0)
    assert info["factor"] == pytest.approx(0.5) and info["alpha"] == 1.0
    silent = torch.zeros(8000)
    out, info = normalize_toward(silent, 16000, 150.0)
    assert math.isnan(info["f0"]) and info["factor"] == 1.0 and torch.equal(out, silent)


# ------------------------------------------------------------------------------------------- the batch module


def batch_of(lengths: list[int], sample_rate: int = 8000, dtype=torch.float32) -> dict[str, torch.Tensor]:
    width = max(lengths)
    values = torch.zeros(len(lengths), width)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        values[i, :n] = tone(150 + 50 * i, sample_rate, n / sample_rate, harmonics=3)[:n]
        mask[i, :n] = 1
    return {"input_values": values.to(dtype), "attention_mask": mask}


def noisy_preset(sample_rate: int = 8000) -> AudioAugment:
    return AudioAugment([AugmentStep(name="vtlp", p=1.0, range=(1.05, 1.25)),
                         AugmentStep(name="noise", p=1.0, range=(10.0, 20.0))], sample_rate)


def test_audio_augment_is_reproducible_by_the_global_seed():
    aug, inputs = noisy_preset(), batch_of([4000, 3000])
    torch.manual_seed(5)
    first = aug(inputs)
    torch.manual_seed(5)
    again = aug(inputs)
    torch.manual_seed(6)
    other = aug(inputs)
    assert torch.equal(first["input_values"], again["input_values"])
    assert not torch.equal(first["input_values"], other["input_values"])
    assert not torch.equal(first["input_values"], inputs["input_values"])


def test_audio_augment_draws_a_parameter_per_sample_in_the_range():
    aug = AudioAugment([AugmentStep(name="tempo", p=1.0, range=(0.8, 1.25))], 8000)
    inputs = batch_of([2000] * 6)
    lengths = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        lengths.append(aug(inputs)["attention_mask"].sum(1).tolist())
    assert lengths[0] == lengths[1] != lengths[2]
    assert len(set(lengths[0])) > 1  # each sample draws its own factor
    assert all(1600 <= n <= 2500 for n in lengths[0] + lengths[2])


def test_audio_augment_with_p_zero_is_the_identity():
    aug = AudioAugment([AugmentStep(name=name, p=0.0, range=(1.1, 1.2))
                        for name in ("pitch_shift", "speed", "tempo", "noise", "vtlp")], 8000)
    inputs = batch_of([4000, 2500], dtype=torch.bfloat16)
    inputs["labels"] = torch.tensor([1, 0])
    out = aug(inputs)
    assert set(out) == set(inputs)
    for key in inputs:
        assert torch.equal(out[key], inputs[key])


def test_audio_augment_tempo_rebuilds_the_mask_and_keeps_padding_zero():
    aug = AudioAugment([AugmentStep(name="tempo", p=1.0, range=(1.25, 1.25))], 8000)
    inputs = batch_of([4000, 2000, 3001], dtype=torch.bfloat16)
    inputs["attention_mask"] = inputs["attention_mask"].int()
    torch.manual_seed(0)
    out = aug(inputs)
    expected = [round(n / 1.25) for n in (4000, 2000, 3001)]
    assert out["attention_mask"].dtype == torch.int32 and out["input_values"].dtype == torch.bfloat16
    assert out["input_values"].shape == (3, max(expected))
    assert out["attention_mask"].sum(1).tolist() == expected
    assert torch.equal(out["attention_mask"][:, :1], torch.ones(3, 1, dtype=torch.int32))  # right-padded
    values = out["input_values"].float()
    assert torch.all(values[out["attention_mask"] == 0] == 0)
    assert torch.all(values[:, :10].abs().sum(1) > 0)


def test_audio_augment_ignores_the_padding_of_short_rows():
    aug = AudioAugment([AugmentStep(name="vtlp", p=1.0, range=(1.05, 1.25)),
                        AugmentStep(name="tempo", p=1.0, range=(0.9, 1.1)),
                        AugmentStep(name="noise", p=1.0, range=(10.0, 20.0))], 8000)
    inputs = batch_of([2400, 4000])  # row 0 is padded with 1600 zeros
    alone = {key: value[:1, :2400] for key, value in inputs.items()}
    torch.manual_seed(11)
    together = aug(inputs)
    torch.manual_seed(11)
    single = aug(alone)
    n = int(single["attention_mask"][0].sum())
    assert int(together["attention_mask"][0].sum()) == n == single["input_values"].shape[1]
    torch.testing.assert_close(together["input_values"][0, :n], single["input_values"][0], atol=1e-6, rtol=1e-5)
    assert torch.all(together["input_values"][0, n:] == 0)


def test_audio_augment_child_preset_and_step_validation():
    aug = AudioAugment.child_preset(16000)
    assert [step.name for step in aug.steps] == ["pitch_shift", "vtlp", "tempo", "noise"]
    assert "pitch_shift" in aug.describe() and "16000" in aug.describe()
    torch.manual_seed(0)
    out = aug(batch_of([6000, 4000], 16000))
    assert torch.isfinite(out["input_values"]).all()
    with pytest.raises(ValidationError):
        AugmentStep(name="tempo", range=(1.2, 0.9))
    with pytest.raises(ValidationError):
        AugmentStep(name="vtlp", range=(0.0, 1.1))
    with pytest.raises(ValidationError):
        AugmentStep(name="noise", range=(5, 10), prob=0.5)


# ------------------------------------------------------------------------------------------------------ errors


def test_bad_input_raises_data_error_naming_the_problem():
    good = tone(200, 8000, 0.25)
    bad = good.clone()
    bad[10] = math.nan
    with pytest.raises(DataError, match="NaN"):
        vtlp(bad, 8000, 1.1)
    with pytest.raises(DataError, match="NaN"):
        AudioAugment.child_preset(8000)({"input_values": bad[None], "attention_mask": torch.ones(1, 2000)})
    with pytest.raises(DataError, match="empty"):
        pitch_shift(torch.zeros(0), 8000, 2)
    with pytest.raises(DataError, match="shape"):
        estimate_f0(torch.stack([good, good]), 8000)
    with pytest.raises(DataError, match="shape"):
        normalize_toward(torch.stack([good, good]), 8000, 150.0)
    for alpha in (0.0, -1.2):
        with pytest.raises(DataError, match="alpha"):
            vtlp(good, 8000, alpha)
    with pytest.raises(DataError, match="factor"):
        change_tempo(good, 8000, 0)
    with pytest.raises(DataError, match="factor"):
        change_speed(good, 8000, -1.0)
    with pytest.raises(DataError, match="sample_rate"):
        pitch_shift(good, 0, 2)
    with pytest.raises(DataError, match="sample_rate"):
        AudioAugment([], -8000)
    with pytest.raises(DataError, match="all zeros"):
        add_noise(good, 10.0, noise=torch.zeros(100))
