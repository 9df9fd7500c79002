"""The one root of every error tuneloop raises on purpose."""


class TuneloopError(Exception):
    """Root of tuneloop's own errors: catch this to tell ours from a library's."""


class ConfigError(TuneloopError):
    """A setting is missing or has a bad value; the message says which and what to do."""


class ModelError(TuneloopError):
    """The chat model could not produce an answer (after retries)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class StoreUnavailable(TuneloopError):
    """Redis could not be reached; callers degrade instead of failing the user."""


class DatasetError(TuneloopError):
    """A dataset file or example is malformed; the message names file and line."""


class TrainingError(TuneloopError):
    """A training run could not be prepared, started or followed."""
