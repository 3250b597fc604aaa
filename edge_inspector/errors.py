"""Errors that end a command with a clear message (exit code 2) instead of a traceback."""

from __future__ import annotations

from os import PathLike


class InputError(Exception):
    """Bad input: a config, recording, model file or argument the program cannot use.

    The message names the file and the field or byte offset, and says what to change.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike[str] | None = None,
        where: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.where = where
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.path, self.where) if p]
        text = ": ".join(parts + [self.message])
        if self.hint:
            text += f" ({self.hint})"
        return text


class RecordingError(InputError):
    """A recording that cannot be read: bad magic, corrupt block, CRC mismatch."""


class ConfigError(InputError):
    """A station config that fails validation; ``problems`` lists every problem found."""

    def __init__(self, path: str | PathLike[str], problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"{len(problems)} problem(s):\n  - " + "\n  - ".join(problems), path=path
        )


class ModelError(InputError):
    """A model file that is missing, malformed, or does not fit the camera."""


class ModelUnavailable(Exception):
    """The model could not run a batch (its inference server down or too slow): the pipeline reports
    the strip as uninspected and goes on (docs/serving.md)."""
