"""User-facing errors: one line, naming the file, field or value at fault."""


class LeantuneError(Exception):
    """An error caused by user input or environment; the CLI prints it as one line."""


class ParameterError(LeantuneError):
    """A bad value of a library parameter: ``"<param> <value>: <reason>"``. The CLI prints the
    parameter as its flag (``budget`` -> ``--budget``, ``eval_limit`` -> ``--eval-limit``), so the
    library names parameters and the command line names flags."""

    def __init__(self, param: str, value, reason: str):
        super().__init__(self._say(param, value, reason))
        self.param, self.value, self.reason = param, value, reason

    @staticmethod
    def _say(name: str, value, reason: str) -> str:
        # A missing value (None) or a switch that is on (True) says nothing the name does not.
        return f"{name}: {reason}" if value is None or value is True else f"{name} {value}: {reason}"

    def as_flag(self, flags: dict[str, str] | None = None) -> str:
        """The message with the flag in place of the parameter name (``flags`` overrides the mapping)."""
        flag = (flags or {}).get(self.param) or "--" + self.param.replace("_", "-")
        return self._say(flag, self.value, self.reason)


class DataError(LeantuneError):
    """A data file is missing or malformed."""

    def __init__(self, path, message, line: int | None = None):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class LeantuneWarning(UserWarning):
    """Something that works but not as the user likely wants (e.g. a setting that is slow on this
    machine); emitted with ``warnings.warn`` and printed by the CLI as one ``warning: ...`` line."""
