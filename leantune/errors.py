"""User-facing errors: one line, naming the file, field or value at fault."""


class LeantuneError(Exception):
    """An error caused by user input or environment; the CLI prints it as one line."""


class DataError(LeantuneError):
    """A data file is missing or malformed."""

    def __init__(self, path, message, line: int | None = None):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
