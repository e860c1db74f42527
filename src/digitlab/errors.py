"""One exception family for everything a user can cause and act on.

The CLI prints the message of a `DigitlabError` without a traceback and exits with
`exit_code` (2: bad input or usage). Anything else is an internal failure (exit 1).
"""


class DigitlabError(Exception):
    """Base of every error digitlab raises on purpose; the message says what to do, on one line.

    details: what a user may want to see to dig further (the files missing, the URLs tried and
    why each failed), on lines of their own after the message in str(err); the CLI prints the
    message alone unless given --verbose."""

    exit_code = 2

    def __init__(self, *args, details: str = ""):
        super().__init__(*args)
        self.details = details

    @property
    def summary(self) -> str:
        """The message without its details."""
        return super().__str__()

    def __str__(self) -> str:
        return f"{self.summary}\n{self.details}" if self.details else self.summary


class DataError(DigitlabError):
    """A dataset file is missing, corrupt, truncated or inconsistent."""


class DatasetNotFoundError(DataError):
    """A dataset is not on disk and could not be downloaded."""


class ChecksumError(DataError):
    """A file's checksum does not match the published one."""


class UnknownNameError(DigitlabError):
    """A dataset, model or recipe name that is not registered."""


class CheckpointError(DigitlabError):
    """A run directory or checkpoint is missing, incomplete or does not match its config."""


class ConfigError(DigitlabError):
    """An option or recipe field has a value that cannot work."""


class WriteError(DigitlabError):
    """A file could not be written (disk full, read-only folder, no permission); nothing was replaced."""


class ExportError(DigitlabError):
    """A model could not be exported, or its export does not compute what the model computes."""


def unknown_name(kind: str, name: str, known) -> UnknownNameError:
    """The error for a name missing from a registry, listing what is registered."""
    return UnknownNameError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(known))}")
