"""Schedules: objects whose value depends only on training progress ``p = step / total`` in [0, 1].

The engine computes ``p`` and logs every schedule's value; nothing hides a counter inside a forward
pass (TLlib's GRL keeps one), so a resumed run sees exactly the values an uninterrupted one saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class Schedule:
    def __call__(self, progress: float) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Schedule):
    value: float = 1.0

    def __call__(self, progress: float) -> float:
        return self.value


@dataclass(frozen=True)
class GaninSchedule(Schedule):
    """Ganin & Lempitsky (2015), eq. in sec. 5: λ(p) = hi · (2 / (1 + exp(−γ p)) − 1), γ = 10.

    Rises smoothly from 0 at the start of training to ``hi`` at the end, which suppresses the noisy
    domain-classifier signal while the features are still random.
    """

    gamma: float = 10.0
    hi: float = 1.0

    def __call__(self, progress: float) -> float:
        return self.hi * (2.0 / (1.0 + math.exp(-self.gamma * progress)) - 1.0)


def grl_schedule(kind: str, gamma: float = 10.0, hi: float = 1.0) -> Schedule:
    """The gradient-reversal λ(p): ``ramp`` is :class:`GaninSchedule` (γ, hi); ``constant`` is ``hi`` at every step."""
    if kind == "ramp":
        return GaninSchedule(gamma, hi)
    if kind == "constant":
        return Constant(hi)
    raise ValueError(f"unknown GRL schedule {kind!r}; use 'ramp' or 'constant'")


@dataclass(frozen=True)
class InverseDecay(Schedule):
    """Learning-rate factor (1 + γ p)^−power (Ganin & Lempitsky 2015: γ = 10, power = 0.75).

    Multiplies each optimizer group's base learning rate; annealed every iteration.
    """

    gamma: float = 10.0
    power: float = 0.75

    def __call__(self, progress: float) -> float:
        return (1.0 + self.gamma * progress) ** (-self.power)


@dataclass(frozen=True)
class CosineDecay(Schedule):
    """Learning-rate factor 0.5 · (1 + cos(π p)), from 1 to 0."""

    def __call__(self, progress: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class LinearDecay(Schedule):
    """Learning-rate factor 1 − p, from 1 to 0 (Hugging Face's default schedule)."""

    def __call__(self, progress: float) -> float:
        return max(0.0, 1.0 - progress)


@dataclass(frozen=True)
class Warmup(Schedule):
    """A linear rise from 0 over the first ``fraction`` of training, then ``after`` over the rest (its progress
    restarts at 0 when the warm-up ends): wav2vec2's and BERT's fine-tuning schedules."""

    after: Schedule
    fraction: float

    def __call__(self, progress: float) -> float:
        if self.fraction <= 0:
            return self.after(progress)
        if progress < self.fraction:
            return progress / self.fraction
        return self.after((progress - self.fraction) / (1.0 - self.fraction))
