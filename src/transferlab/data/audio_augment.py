"""Speech augmentation from adult to child speech, and test-time normalisation from child to adult speech.

Child speech has a higher fundamental frequency (f0, heard as pitch), higher formants (a shorter vocal tract),
a different speaking rate, and is often recorded in noisier rooms. A model trained on adult speech can be made to
fit children better by training it on adult speech moved toward children's speech ("augmentation"), or by moving
child speech toward adult speech at test time ("normalisation"). All transforms here take and return 1-D float
waveforms (torch tensors, in [-1, 1] or z-normalised). Most also take a ``(batch, time)`` stack, which is noted
below. Each transform says which library call does the work:

:func:`pitch_shift`
    Moves the pitch by a number of semitones and keeps the duration. ``torchaudio.functional.pitch_shift`` does
    the work: a phase-vocoder time stretch, then resampling back to the original duration. The resampling ratio
    is rounded to a fraction with a denominator of at most 500 (below 0.01 cents), because the windowed-sinc
    kernel that torchaudio builds grows with the ratio's terms.
:func:`change_speed`
    Plays the audio ``factor`` times faster: the duration is divided by ``factor`` and every frequency is
    multiplied by it (sox ``speed``). ``torchaudio.functional.resample`` does the work, with the ratio rounded
    as above. This is what ``torchaudio.functional.speed`` does, but that function takes the ratio as whole
    sample rates.
:func:`change_tempo`
    Divides the duration by ``factor`` and keeps the pitch. It takes an STFT, then
    ``torchaudio.functional.phase_vocoder``, then an inverse STFT.
:func:`add_noise`
    Adds white Gaussian noise, or a given noise, at an exact signal-to-noise ratio.
    ``torchaudio.functional.add_noise`` scales the noise.
:func:`vtlp`
    Vocal-tract-length perturbation (Jaitly & Hinton 2013, "Vocal Tract Length Perturbation (VTLP) improves
    speech recognition", ICML WDLASL workshop). The frequency axis is warped piecewise-linearly:
    ``f -> alpha * f`` below the boundary ``f_hi * min(alpha, 1) / alpha``, then linearly up to the Nyquist
    frequency, which maps to itself. This moves formants and every other component below the boundary, so
    ``alpha > 1`` is the adult-to-child direction. Jaitly & Hinton warp the filterbank of a spectrogram. No
    maintained library has a waveform-to-waveform VTLP, so this module implements one. It takes an STFT
    (``torch.stft``). Each output bin gets its magnitude by linear interpolation between the input bins at the
    unwarped frequency. Its phase comes from the warped instantaneous frequency, added up from frame to frame as
    in a phase vocoder, so that a component lands coherently on its new frequency. Then it takes the inverse STFT
    (``torch.istft``), and the result is rescaled to the input's RMS level.
:func:`estimate_f0`
    Finds the median f0 over voiced frames. It uses a normalised autocorrelation, corrected for the analysis
    window, following Boersma's 1993 method (the one Praat uses), written here. It takes the first strong peak
    to avoid octave errors. It is not ``torchaudio.functional.detect_pitch_frequency``, which has no voicing
    decision.
:func:`normalize_toward`
    Normalises one utterance at test time toward a reference f0, for example child to adult. It combines
    :func:`pitch_shift` and :func:`vtlp`, so that the net f0 change is ``target_f0 / f0``.

:class:`AudioAugment` applies a list of :class:`AugmentStep` to a padded batch
(``{"input_values", "attention_mask"}``). Each sample draws its own parameters from torch's global generator.
"""

from __future__ import annotations

import math
import numbers
from fractions import Fraction
from typing import Literal

import torch
import torchaudio.functional as AF
from torch import Tensor, nn

from ..config import AudioAugmentStep
from ..errors import DataError

__all__ = [
    "pitch_shift", "change_speed", "change_tempo", "add_noise", "vtlp", "estimate_f0", "normalize_toward",
    "AugmentStep", "AudioAugment",
]

_MAX_DENOMINATOR = 500
"""Resampling ratios are rounded to p/q with q <= this, which keeps the sinc kernel (q x ~p taps) small."""
_MAX_FACTOR = 4.0
"""Speed, tempo and pitch ratios are limited to [1/4, 4] (two octaves); beyond that the result is no longer speech."""


# ----------------------------------------------------------------------------------------------------- checks


def _check_rate(sample_rate) -> int:
    ok = isinstance(sample_rate, numbers.Real) and not isinstance(sample_rate, bool) and math.isfinite(sample_rate)
    if not ok or sample_rate <= 0 or int(sample_rate) != sample_rate:
        raise DataError(f"sample_rate must be a positive whole number of samples per second (e.g. 16000), "
                        f"got {sample_rate!r}")
    return int(sample_rate)


def _check_number(value, name: str, *, positive: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
    if not ok or not math.isfinite(value) or (positive and value <= 0):
        need = "a finite number > 0" if positive else "a finite number"
        raise DataError(f"{name} must be {need}, got {value!r}")
    return value


def _check_ratio(value, name: str) -> float:
    value = _check_number(value, name, positive=True)
    if not 1 / _MAX_FACTOR <= value <= _MAX_FACTOR:
        raise DataError(f"{name}={value:g} is out of range; use a value between {1 / _MAX_FACTOR:g} and "
                        f"{_MAX_FACTOR:g} (1 leaves the audio unchanged)")
    return value


def _check_wave(wave, name: str = "wave", ndims: tuple[int, ...] = (1, 2)) -> None:
    if not isinstance(wave, Tensor):
        raise DataError(f"{name} must be a torch.Tensor of audio samples, got {type(wave).__name__}; "
                        f"convert it with torch.as_tensor(...)")
    if not wave.is_floating_point():
        raise DataError(f"{name} must hold floating-point samples, got dtype {wave.dtype}; convert it first "
                        f"(16-bit PCM: wave.float() / 32768)")
    if wave.dim() not in ndims:
        shapes = " or ".join({1: "(time,)", 2: "(batch, time)"}[d] for d in ndims)
        hint = "; pass one utterance at a time (wave[i])" if ndims == (1,) else ""
        raise DataError(f"{name} must have shape {shapes}, got shape {tuple(wave.shape)}{hint}")
    if wave.numel() == 0:
        raise DataError(f"{name} is empty (shape {tuple(wave.shape)}); drop empty utterances before augmenting")
    bad = int((~torch.isfinite(wave)).sum())
    if bad:
        raise DataError(f"{name} has {bad} NaN/Inf samples out of {wave.numel()}; fix or drop the utterance "
                        f"(check the decoding, and the normalisation of silent clips)")


# ---------------------------------------------------------------------------------------------------- helpers


def _work(wave: Tensor) -> Tensor:
    """The wave in a dtype the FFT code accepts: float64 stays, anything else (bf16, fp16) becomes float32."""
    return wave if wave.dtype in (torch.float32, torch.float64) else wave.float()


def _n_fft(sample_rate: int, seconds: float) -> int:
    """A power-of-two FFT size near ``seconds``: 512 at 16 kHz and 256 at 8 kHz for 32 ms."""
    return max(16, 2 ** round(math.log2(sample_rate * seconds)))


def _pad_to(wave: Tensor, length: int) -> Tensor:
    """Right-pad (or cut) the last dimension to exactly ``length`` samples."""
    missing = length - wave.shape[-1]
    if missing < 0:
        return wave[..., :length]
    return torch.nn.functional.pad(wave, (0, missing)) if missing else wave


def _out_length(length: int, factor: float) -> int:
    return max(1, int(round(length / factor)))


def _fraction(ratio: float) -> tuple[int, int]:
    """``ratio`` as p/q in small whole numbers (q <= _MAX_DENOMINATOR; the error is below ~1e-5 relative)."""
    fraction = Fraction(ratio).limit_denominator(_MAX_DENOMINATOR)
    return fraction.numerator, fraction.denominator


def _stft(wave: Tensor, n_fft: int) -> tuple[Tensor, Tensor, int]:
    hop = n_fft // 4
    window = torch.hann_window(n_fft, dtype=wave.dtype, device=wave.device)
    spec = torch.stft(wave, n_fft, hop, window=window, center=True, pad_mode="reflect", return_complex=True)
    return spec, window, hop


# ------------------------------------------------------------------------------------------------- transforms


def pitch_shift(wave: Tensor, sample_rate: int, semitones: float) -> Tensor:
    """Move the pitch by ``semitones`` (+12: one octave up) and keep the duration; ``(T,)`` or ``(B, T)``.

    ``torchaudio.functional.pitch_shift`` does the work, with a 32 ms FFT (512 at 16 kHz, 256 at 8 kHz) and a
    quarter-window hop. The ratio ``2 ** (semitones / 12)`` is rounded to p/q with q <= 500 (below 0.01 cents).
    torchaudio is given q as the "sample rate", so its resampling step is p -> q instead of a ratio of two large
    whole numbers, whose sinc kernel would have millions of taps.
    """
    sample_rate = _check_rate(sample_rate)
    _check_wave(wave)
    semitones = _check_number(semitones, "semitones")
    if abs(semitones) > 12 * math.log2(_MAX_FACTOR):
        raise DataError(f"semitones={semitones:g} is out of range; shift by at most "
                        f"{12 * math.log2(_MAX_FACTOR):g} semitones either way")
    if semitones == 0:
        return wave.clone()
    p, q = _fraction(2.0 ** (semitones / 12))
    # torchaudio resamples from int(sample_rate * 2 ** (n_steps / 12)) to sample_rate; the 1e-4 keeps int() at p.
    n_steps = 12 * math.log2((p + 1e-4) / q)
    assert int(q / 2.0 ** (-n_steps / 12)) == p
    x = _work(wave)
    length = x.shape[-1]
    n_fft = _n_fft(sample_rate, 0.032)
    x = _pad_to(x, max(length, n_fft))  # torch.stft's reflect padding needs more than n_fft / 2 samples
    window = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)
    y = AF.pitch_shift(x, q, n_steps, n_fft=n_fft, hop_length=n_fft // 4, window=window)
    return y[..., :length].to(wave.dtype)


def change_speed(wave: Tensor, sample_rate: int, factor: float) -> Tensor:
    """Play ``factor`` times faster (sox ``speed``). The length becomes ``round(T / factor)`` and every frequency,
    pitch and formants included, is multiplied by ``factor``. Works on ``(T,)`` or ``(B, T)``.

    ``torchaudio.functional.resample`` does the work, from p to q with p/q = ``factor`` rounded to q <= 500.
    It low-pass filters when speeding up, so nothing aliases.
    """
    _check_rate(sample_rate)
    _check_wave(wave)
    factor = _check_ratio(factor, "factor")
    length = _out_length(wave.shape[-1], factor)
    if factor == 1:
        return wave.clone()
    p, q = _fraction(factor)
    y = AF.resample(_work(wave), p, q)
    return _pad_to(y, length).to(wave.dtype)


def change_tempo(wave: Tensor, sample_rate: int, factor: float) -> Tensor:
    """Divide the duration by ``factor`` and keep the pitch. The length becomes exactly ``round(T / factor)``.
    Works on ``(T,)`` or ``(B, T)``.

    It takes an STFT (32 ms Hann window, quarter hop), then ``torchaudio.functional.phase_vocoder`` at rate
    ``factor``, then ``torch.istft``.
    """
    sample_rate = _check_rate(sample_rate)
    _check_wave(wave)
    factor = _check_ratio(factor, "factor")
    length = _out_length(wave.shape[-1], factor)
    if factor == 1:
        return wave.clone()
    x = _work(wave)
    n_fft = _n_fft(sample_rate, 0.032)
    x = _pad_to(x, max(x.shape[-1], n_fft))
    spec, window, hop = _stft(x, n_fft)
    advance = torch.linspace(0, math.pi * hop, spec.shape[-2], dtype=x.dtype, device=x.device)[:, None]
    spec = AF.phase_vocoder(spec, factor, advance)
    y = torch.istft(spec, n_fft, hop, window=window, length=_out_length(x.shape[-1], factor))
    return _pad_to(y, length).to(wave.dtype)


def add_noise(wave: Tensor, snr_db: float, noise: Tensor | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """Add noise at a signal-to-noise ratio of exactly ``snr_db``, where SNR = 10·log10(P_signal / P_noise).
    Works on ``(T,)`` or ``(B, T)``; each row gets the ratio.

    ``noise`` is white Gaussian noise by default, drawn from ``generator``, or from torch's global CPU generator
    when that is None. A given ``noise`` of shape ``(N,)`` is tiled or cut to the wave's length.
    ``torchaudio.functional.add_noise`` scales the noise. A silent (all-zero) wave has no defined SNR and comes
    back unchanged.
    """
    _check_wave(wave)
    snr_db = _check_number(snr_db, "snr_db")
    x = _work(wave)
    length = x.shape[-1]
    if noise is None:
        device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
    else:
        _check_wave(noise, "noise", (1,))
        if not bool(noise.abs().max() > 0):
            raise DataError("noise is all zeros, so it cannot be scaled to an SNR; pass a recording with sound in it")
        reps = -(-length // noise.shape[-1])
        noise = noise.to(device=x.device, dtype=x.dtype).repeat(reps)[:length].expand(x.shape)
    snr = torch.full(x.shape[:-1], snr_db, dtype=x.dtype, device=x.device)
    return AF.add_noise(x, noise, snr).to(wave.dtype)


def _warp(freq: Tensor, alpha: float, low: float, nyquist: float) -> Tensor:
    """Jaitly & Hinton's piecewise-linear warp: alpha·f below ``low``, then linear to (nyquist, nyquist)."""
    upper = nyquist - (nyquist - alpha * low) / (nyquist - low) * (nyquist - freq)
    return torch.where(freq <= low, alpha * freq, upper)


def _unwarp(freq: Tensor, alpha: float, low: float, nyquist: float) -> Tensor:
    """The inverse of :func:`_warp`."""
    upper = nyquist - (nyquist - low) / (nyquist - alpha * low) * (nyquist - freq)
    return torch.where(freq <= alpha * low, freq / alpha, upper)


def vtlp(wave: Tensor, sample_rate: int, alpha: float, boundary_hz: float = 4800.0) -> Tensor:
    """Vocal-tract-length perturbation (Jaitly & Hinton 2013) of a waveform. The result has the same length.
    Works on ``(T,)`` or ``(B, T)``.

    The frequency axis is warped so that every component below ``boundary_hz * min(alpha, 1) / alpha`` moves to
    ``alpha`` times its frequency. Above that, the axis is warped linearly so that the Nyquist frequency stays
    put. ``alpha > 1`` raises the formants (adult to child); ``alpha < 1`` lowers them. ``boundary_hz`` is
    clipped to 0.9 × Nyquist, so that 8 kHz audio still has room above the boundary.

    The warp is applied to an STFT with a 64 ms window (1024 samples at 16 kHz), which resolves the harmonics of
    low voices, and a quarter hop. Each output bin takes its magnitude by interpolation at the unwarped
    frequency. Its phase follows the warped instantaneous frequency of the nearest input bin, added up over
    frames. The inverse STFT is scaled to the input's RMS level, so the loudness does not change.
    """
    sample_rate = _check_rate(sample_rate)
    _check_wave(wave)
    alpha = _check_ratio(alpha, "alpha")
    boundary_hz = _check_number(boundary_hz, "boundary_hz", positive=True)
    if alpha == 1:
        return wave.clone()
    nyquist = sample_rate / 2
    low = min(boundary_hz, 0.9 * nyquist) * min(alpha, 1.0) / alpha
    x = _work(wave)
    length = x.shape[-1]
    n_fft = _n_fft(sample_rate, 0.064)
    x = _pad_to(x, max(length, n_fft))
    spec, window, hop = _stft(x, n_fft)  # (..., F, M)
    bins = spec.shape[-2]
    freqs = torch.linspace(0, nyquist, bins, dtype=x.dtype, device=x.device)
    source = _unwarp(freqs, alpha, low, nyquist) / nyquist * (bins - 1)  # fractional input bin of each output bin
    left = source.floor().long().clamp(0, bins - 2)
    weight = (source - left)[:, None]
    nearest = source.round().long().clamp(0, bins - 1)
    magnitude = spec.abs()
    magnitude = magnitude.index_select(-2, left) * (1 - weight) + magnitude.index_select(-2, left + 1) * weight
    # Instantaneous frequency (Hz) of each input bin, from the phase advance between frames.
    phase = spec.angle()
    expected = 2 * math.pi * freqs[:, None] * hop / sample_rate
    deviation = phase[..., 1:] - phase[..., :-1] - expected
    deviation = deviation - 2 * math.pi * torch.round(deviation / (2 * math.pi))
    instantaneous = freqs[:, None] + deviation * sample_rate / (2 * math.pi * hop)
    warped = _warp(instantaneous.index_select(-2, nearest), alpha, low, nyquist)
    advance = 2 * math.pi * warped * hop / sample_rate
    phase = torch.cat([phase.index_select(-2, nearest)[..., :1], advance], dim=-1).cumsum(-1)
    y = torch.istft(torch.polar(magnitude, phase), n_fft, hop, window=window, length=x.shape[-1])[..., :length]
    rms_in = x[..., :length].pow(2).mean(-1, keepdim=True).sqrt()
    rms_out = y.pow(2).mean(-1, keepdim=True).sqrt()
    y = y * torch.where(rms_out > 0, rms_in / rms_out.clamp_min(1e-30), torch.zeros_like(rms_out))
    return y.to(wave.dtype)


def estimate_f0(wave: Tensor, sample_rate: int, fmin: float = 60.0, fmax: float = 500.0) -> float:
    """The median fundamental frequency (Hz) of the voiced frames of a ``(T,)`` wave, or NaN if no frame is
    voiced.

    Frames are three periods of ``fmin`` long (50 ms at 60 Hz), with a 10 ms hop. Each frame gets a Hann window
    and a normalised autocorrelation, divided by the window's own autocorrelation (Boersma 1993). The frame's
    period is the first local peak between 1/fmax and 1/fmin whose height is within 90 % of the highest peak,
    which avoids picking a multiple of the period. The peak is refined by parabolic interpolation. A frame is
    voiced when that peak is at least 0.5 and its RMS is within 30 dB of the loudest frame's. A wave shorter than
    one frame gives NaN.
    """
    sample_rate = _check_rate(sample_rate)
    _check_wave(wave, ndims=(1,))
    fmin = _check_number(fmin, "fmin", positive=True)
    fmax = _check_number(fmax, "fmax", positive=True)
    if not fmin < fmax < sample_rate / 4:
        raise DataError(f"need 0 < fmin < fmax < sample_rate / 4 for an f0 search, got fmin={fmin:g}, "
                        f"fmax={fmax:g} at {sample_rate} Hz")
    x = wave.detach().to(device="cpu", dtype=torch.float64)
    frame = int(math.ceil(3 * sample_rate / fmin))
    hop = max(1, int(round(0.01 * sample_rate)))
    min_lag = max(2, int(math.floor(sample_rate / fmax)))
    max_lag = int(math.ceil(sample_rate / fmin))
    if x.shape[-1] < frame:  # too short for even one analysis frame
        return math.nan
    frames = x.unfold(0, frame, hop)
    frames = frames - frames.mean(-1, keepdim=True)
    rms = frames.pow(2).mean(-1).sqrt()
    window = torch.hann_window(frame, periodic=False, dtype=torch.float64)
    n_fft = 2 ** math.ceil(math.log2(2 * frame))

    def autocorrelation(signal: Tensor) -> Tensor:
        return torch.fft.irfft(torch.fft.rfft(signal, n_fft).abs().pow(2), n_fft)[..., :max_lag + 2]

    ac = autocorrelation(frames * window)
    ac_window = autocorrelation(window)
    r = ac / ac[:, :1].clamp_min(1e-300) / (ac_window / ac_window[0])
    middle = r[:, min_lag:max_lag + 1]
    peak = (middle > r[:, min_lag - 1:max_lag]) & (middle >= r[:, min_lag + 1:max_lag + 2])
    best = torch.where(peak, middle, torch.full_like(middle, -math.inf)).max(-1).values
    first = (peak & (middle >= 0.9 * best[:, None])).to(torch.int8).argmax(-1)
    lag = (first + min_lag)[:, None]
    before, at, after = r.gather(1, lag - 1)[:, 0], r.gather(1, lag)[:, 0], r.gather(1, lag + 1)[:, 0]
    curvature = before - 2 * at + after
    shift = torch.where(curvature < 0, 0.5 * (before - after) / curvature.clamp(max=-1e-12), torch.zeros_like(at))
    f0 = sample_rate / (lag[:, 0] + shift.clamp(-0.5, 0.5))
    loudest = float(rms.max())
    voiced = (best >= 0.5) & (rms >= max(loudest * 10 ** (-30 / 20), 1e-7))
    if not bool(voiced.any()):
        return math.nan
    return float(torch.quantile(f0[voiced], 0.5))


def normalize_toward(wave: Tensor, sample_rate: int, target_f0: float, *, f0: float | None = None,
                     formant_exponent: float = 1.0, max_factor: float = 2.0) -> tuple[Tensor, dict]:
    """Move one ``(T,)`` utterance toward a reference speaker range at test time (for example child to adult).

    ``factor = target_f0 / f0``, clipped to [1/max_factor, max_factor]. ``f0`` is :func:`estimate_f0` of the
    wave unless given (a per-speaker estimate is steadier). The f0 ends up multiplied by ``factor``, and the
    formants are warped by :func:`vtlp` with ``alpha = factor ** formant_exponent`` (0 turns the warp off). VTLP
    also moves the harmonics by ``alpha``, so the pitch shift applied is ``12 * log2(factor / alpha)``
    semitones. With ``formant_exponent=1`` that is no shift at all: VTLP alone scales f0 and formants together.

    Returns the wave and ``{"f0", "factor", "semitones", "alpha", "shift_semitones"}``. ``semitones`` is the
    net f0 change, ``12 * log2(factor)``; ``shift_semitones`` is the :func:`pitch_shift` step applied. An
    unvoiced utterance (f0 NaN) comes back unchanged with factor 1.
    """
    sample_rate = _check_rate(sample_rate)
    _check_wave(wave, ndims=(1,))
    target_f0 = _check_number(target_f0, "target_f0", positive=True)
    formant_exponent = _check_number(formant_exponent, "formant_exponent")
    max_factor = _check_number(max_factor, "max_factor", positive=True)
    if not 1 <= max_factor <= _MAX_FACTOR:
        raise DataError(f"max_factor must be between 1 and {_MAX_FACTOR:g}, got {max_factor:g}")
    if f0 is None:
        f0 = estimate_f0(wave, sample_rate)
    elif not (isinstance(f0, numbers.Real) and math.isnan(f0)):
        f0 = _check_number(f0, "f0", positive=True)
    if math.isnan(f0):
        return wave.clone(), {"f0": math.nan, "factor": 1.0, "semitones": 0.0, "alpha": 1.0, "shift_semitones": 0.0}
    factor = min(max(target_f0 / f0, 1 / max_factor), max_factor)
    alpha = min(max(factor ** formant_exponent, 1 / _MAX_FACTOR), _MAX_FACTOR)
    shift = 12 * math.log2(factor / alpha)
    out = wave
    if abs(shift) > 1e-6:
        out = pitch_shift(out, sample_rate, shift)
    if abs(alpha - 1) > 1e-9:
        out = vtlp(out, sample_rate, alpha)
    if out is wave:
        out = wave.clone()
    info = {"f0": float(f0), "factor": factor, "semitones": 12 * math.log2(factor), "alpha": alpha,
            "shift_semitones": shift}
    return out, info


# ------------------------------------------------------------------------------------------ the batch module


StepName = Literal["pitch_shift", "speed", "tempo", "noise", "vtlp"]

_PARAMETER = {"pitch_shift": "semitones", "speed": "speed factor", "tempo": "tempo factor", "noise": "SNR dB",
              "vtlp": "VTLP alpha"}


AugmentStep = AudioAugmentStep
"""One step: ``name``, probability ``p``, parameter ``range`` (defined with the run configuration, which validates
``data.audio.augment`` and ``data.<set>.perturb``)."""


class AudioAugment(nn.Module):
    """Augment a right-padded audio batch ``{"input_values": (B, T) float, "attention_mask": (B, T)}`` sample by
    sample.

    For each sample, each step in order is applied with probability ``p``, to the valid part only
    (``attention_mask[i].sum()`` samples), with its parameter drawn uniformly in ``range``. All draws use
    torch's global CPU generator: two ``torch.rand`` numbers per sample and step, plus the noise samples. So
    ``torch.manual_seed`` makes the output reproducible, and a sample's result does not depend on the samples
    after it. Speed and tempo change lengths; then the rows are re-padded with zeros to the new longest length
    and ``attention_mask`` is rebuilt in its dtype. The work runs without autograd, in float32 (float64 stays
    float64), on the inputs' device, and the output has the input's dtype. Other keys of the dict pass through
    untouched.
    """

    def __init__(self, steps: list[AugmentStep], sample_rate: int):
        super().__init__()
        self.sample_rate = _check_rate(sample_rate)
        self.steps = [step if isinstance(step, AugmentStep) else AugmentStep.model_validate(step) for step in steps]

    @classmethod
    def child_preset(cls, sample_rate: int) -> AudioAugment:
        """Adult to child: pitch up 2–6 semitones (p 0.5), VTLP alpha 1.05–1.25 (p 0.5), tempo 0.9–1.1 (p 0.3),
        and noise at 10–30 dB SNR (p 0.3)."""
        return cls([AugmentStep(name="pitch_shift", p=0.5, range=(2.0, 6.0)),
                    AugmentStep(name="vtlp", p=0.5, range=(1.05, 1.25)),
                    AugmentStep(name="tempo", p=0.3, range=(0.9, 1.1)),
                    AugmentStep(name="noise", p=0.3, range=(10.0, 30.0))], sample_rate)

    def describe(self) -> str:
        if not self.steps:
            return f"audio augmentation at {self.sample_rate} Hz: none"
        parts = [f"{step.name} ({_PARAMETER[step.name]} {step.range[0]:g}..{step.range[1]:g}, p={step.p:g})"
                 for step in self.steps]
        return f"audio augmentation at {self.sample_rate} Hz: " + ", then ".join(parts)

    def extra_repr(self) -> str:
        return self.describe()

    def _apply(self, name: str, wave: Tensor, value: float) -> Tensor:
        if name == "pitch_shift":
            return pitch_shift(wave, self.sample_rate, value)
        if name == "speed":
            return change_speed(wave, self.sample_rate, value)
        if name == "tempo":
            return change_tempo(wave, self.sample_rate, value)
        if name == "noise":
            return add_noise(wave, value)
        return vtlp(wave, self.sample_rate, value)

    @torch.no_grad()
    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        if not isinstance(inputs, dict) or "input_values" not in inputs:
            got = f"a dict with keys {sorted(inputs)}" if isinstance(inputs, dict) else type(inputs).__name__
            raise DataError(f"AudioAugment expects a dict with 'input_values' (B, T) and 'attention_mask' (B, T), "
                            f"got {got}")
        values = inputs["input_values"]
        if not isinstance(values, Tensor) or values.dim() != 2 or not values.is_floating_point():
            shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise DataError(f"input_values must be a (batch, time) float tensor of waveforms, got {shape}")
        mask = inputs.get("attention_mask")
        batch, width = values.shape
        if mask is not None and tuple(mask.shape) != (batch, width):
            raise DataError(f"attention_mask has shape {tuple(mask.shape)} but input_values has {(batch, width)}; "
                            "they must match")
        lengths = mask.sum(-1).tolist() if mask is not None else [width] * batch
        out = dict(inputs)
        if not self.steps or batch == 0:
            return out
        work = _work(values)
        rows, changed = [], False
        for i in range(batch):
            n = int(lengths[i])
            row = work[i, :n]
            for step in self.steps:
                draw_p, draw_value = torch.rand(2).tolist()
                if n == 0 or draw_p >= step.p:
                    continue
                low, high = step.range
                try:
                    row = self._apply(step.name, row, low + (high - low) * draw_value)
                except DataError as exc:
                    raise DataError(f"input_values row {i} ({n} valid samples), step {step.name}: {exc}") from None
                changed = True
            rows.append(row)
        if not changed:
            return out
        new_lengths = [row.shape[-1] for row in rows]
        new_width = width if new_lengths == [int(n) for n in lengths] else max(new_lengths)
        result = work.new_zeros(batch, new_width)
        for i, row in enumerate(rows):
            result[i, :row.shape[-1]] = row
        out["input_values"] = result.to(values.dtype)
        if mask is not None or new_width != width:
            length_tensor = torch.tensor(new_lengths, device=values.device)
            new_mask = torch.arange(new_width, device=values.device)[None, :] < length_tensor[:, None]
            out["attention_mask"] = new_mask.to(mask.dtype if mask is not None else torch.long)
        return out
