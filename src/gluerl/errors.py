"""Errors that name what is wrong: the config key, the file, the row."""


class GlueRLError(Exception):
    """Base class: a problem the user can fix, reported without a traceback by the CLIs."""


class ConfigError(GlueRLError):
    """A malformed or inconsistent configuration (names the key)."""


class DataError(GlueRLError):
    """Bad input data (names the file and, where known, the line)."""

    def __init__(self, message: str, path=None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}" + (f", line {line}" if line is not None else "") + ": "
        super().__init__(where + message)
        self.path = path
        self.line = line


class TrainingError(GlueRLError):
    """Training cannot go on (non-finite loss or reward, wrong checkpoint...)."""
