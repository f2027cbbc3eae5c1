"""User-facing errors.

Every error a user can cause (bad config, missing data, wrong shapes, a run directory that is
already taken) is raised as a :class:`TransferlabError` with a message that says what was wrong
and what to do. The CLI prints the message and exits with status 2 instead of a traceback.
"""


class TransferlabError(Exception):
    """An error caused by the user's input, with a message that explains how to fix it."""


class ConfigError(TransferlabError):
    """The configuration (YAML file or ``--set`` overrides) is invalid."""


class DataError(TransferlabError):
    """A dataset is missing, corrupt, or does not fit the task."""


class CheckpointError(TransferlabError):
    """A checkpoint or run directory cannot be used."""


def state_dict_mismatch(exc: RuntimeError, limit: int = 2) -> str:
    """The useful part of torch's ``load_state_dict`` error: the first few mismatches, one line."""
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    return "; ".join(lines[:limit]) or str(exc).splitlines()[0]
