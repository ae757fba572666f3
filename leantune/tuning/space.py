"""The hyperparameter search space for LoRA fine-tuning, and its TOML/YAML override file.

The defaults deliberately reach into the region where a high learning rate together with a high
LoRA alpha breaks training (Oliver & Wang 2024 saw 0 accuracy there), so a search can learn to
avoid it instead of never seeing it.

Override file (TOML shown; YAML with the same keys also works)::

    [params.lr]                 # replaces the default range of one parameter
    low = 1e-5
    high = 3e-3
    log = true
    [params.alpha]
    choices = [8, 16, 32]
    [params.dropout]
    value = 0.05                # pinned: not searched
    [baseline]                  # the default-hyperparameter run the report compares against
    lr = 1e-4
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import DataError, LeantuneError

# Every name a space may search or pin; each maps onto a FinetuneConfig field of the same name.
KNOWN_PARAMS = ("lr", "alpha", "r", "dropout", "epochs", "max_steps", "batch_size", "warmup_ratio")


@dataclass(frozen=True)
class ParamSpec:
    """One searched (or pinned) hyperparameter: a float/int range, a list of choices, or a fixed value."""

    name: str
    kind: str  # 'float' | 'int' | 'categorical' | 'fixed'
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()
    value: Any = None

    def suggest(self, trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        return self.value

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        if self.kind == "fixed":
            return value == self.value
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.kind == "categorical":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        if self.kind == "fixed":
            return f"= {self.value}"
        return f"[{self.low:g}, {self.high:g}]" + (" log" if self.log else "")

    def to_dict(self) -> dict:
        out = {"kind": self.kind}
        if self.kind in ("float", "int"):
            out.update(low=self.low, high=self.high, log=self.log)
        elif self.kind == "categorical":
            out["choices"] = list(self.choices)
        else:
            out["value"] = self.value
        return out


def _default_params() -> dict[str, ParamSpec]:
    specs = [
        ParamSpec("lr", "float", 1e-5, 1e-2, log=True),
        ParamSpec("alpha", "categorical", choices=(8, 16, 32, 64, 128)),
        ParamSpec("r", "categorical", choices=(4, 8, 16)),
        ParamSpec("dropout", "float", 0.0, 0.2),
        ParamSpec("epochs", "int", 1, 4),
        ParamSpec("batch_size", "categorical", choices=(4, 8, 16)),
        ParamSpec("warmup_ratio", "float", 0.0, 0.2),
    ]
    return {s.name: s for s in specs}


# The BIGRec recipe's LoRA/optimiser settings (FinetuneConfig defaults); epochs and batch size are
# scaled down to the small CPU-sized runs this search is meant for.
DEFAULT_BASELINE = {"lr": 1e-4, "alpha": 16, "r": 8, "dropout": 0.05, "epochs": 2, "batch_size": 8, "warmup_ratio": 0.0}


@dataclass(frozen=True)
class SearchSpace:
    params: Mapping[str, ParamSpec] = field(default_factory=_default_params)
    baseline: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_BASELINE))

    def suggest(self, trial) -> dict[str, Any]:
        """Ask ``trial`` for every parameter (enqueued trials get their fixed values back)."""
        return {name: spec.suggest(trial) for name, spec in self.params.items()}

    def baseline_params(self) -> dict[str, Any]:
        """The baseline's values for the searched parameters (pinned ones keep their value)."""
        out = {}
        for name, spec in self.params.items():
            if spec.kind == "fixed":
                continue
            if name not in self.baseline:
                raise LeantuneError(f"search space: baseline has no value for searched parameter {name!r}")
            out[name] = self.baseline[name]
        return out

    def to_dict(self) -> dict:
        return {"params": {n: s.to_dict() for n, s in self.params.items()}, "baseline": dict(self.baseline)}

    def describe(self) -> list[str]:
        return [f"{n} {s.describe()}" for n, s in self.params.items()]

    def check(self, where: str = "search space") -> None:
        """Refuse a space that can propose a value no fine-tune accepts (``DataError`` naming it).

        Every value the space holds is put through ``FinetuneConfig``'s own checks (the trainer
        refuses the same values; the synthetic runner would turn them into failed trials): a pinned
        value, each choice, and both ends of a range. Each check is an interval (``lr > 0``,
        ``0 <= dropout < 1``, ...) and Optuna's ranges include their ends, so the ends being valid
        means the whole range is; a range whose whole extent is invalid is refused by name too.
        """
        for name, spec in self.params.items():
            if spec.kind == "fixed":
                problem = _setting_error(self, name, spec.value)
                if problem:
                    raise DataError(where, f"params.{name} = {spec.value!r}: {problem}")
                continue
            if spec.kind == "categorical":
                labelled = [(f"params.{name}.choices holds {v!r}", v) for v in spec.choices]
            else:
                labelled = [(f"params.{name}.low = {spec.low!r}", spec.low), (f"params.{name}.high = {spec.high!r}", spec.high)]
            problems = [(label, _setting_error(self, name, v)) for label, v in labelled]
            if spec.kind != "categorical" and all(problem for _, problem in problems):
                raise DataError(where, f"params.{name} = [{spec.low!r}, {spec.high!r}]: no value in the range is valid ({problems[0][1]})")
            for label, problem in problems:
                if problem:
                    raise DataError(where, f"{label}: {problem}; every value the space can propose must be valid")


def _setting_error(space: SearchSpace, name: str, value: Any) -> str | None:
    """Why ``FinetuneConfig`` refuses ``name = value`` (other settings at their defaults), or None."""
    from ..train.config import FinetuneConfig

    if isinstance(value, bool):
        return "must be a number, got a boolean"
    others = {}
    if name == "epochs" and "max_steps" in space.params:
        others["max_steps"] = 1  # a step budget overrides epochs (FinetuneConfig accepts any epochs then)
    try:
        FinetuneConfig(**others, **{name: value})
    except LeantuneError as exc:
        return str(exc).removeprefix("fine-tuning setting: ")
    except TypeError:  # a string, a list, ... compared with a number
        return f"must be a number, got {type(value).__name__}"
    return None


def _spec_from_mapping(name: str, raw: Any, where: str) -> ParamSpec:
    if not isinstance(raw, Mapping):
        return ParamSpec(name, "fixed", value=raw)
    unknown = set(raw) - {"low", "high", "log", "choices", "value", "type"}
    if unknown:
        raise DataError(where, f"params.{name}: unknown key(s) {sorted(unknown)}; use low/high/log, choices or value")
    if "value" in raw:
        return ParamSpec(name, "fixed", value=raw["value"])
    if "choices" in raw:
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise DataError(where, f"params.{name}.choices: must be a non-empty list, got {choices!r}")
        return ParamSpec(name, "categorical", choices=tuple(choices))
    if "low" not in raw or "high" not in raw:
        raise DataError(where, f"params.{name}: needs low and high, choices, or value")
    low, high = raw["low"], raw["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
        raise DataError(where, f"params.{name}: need numbers with low < high, got low={low!r} high={high!r}")
    log = bool(raw.get("log", False))
    if log and low <= 0:
        raise DataError(where, f"params.{name}: a log range needs low > 0, got {low!r}")
    is_int = raw.get("type") == "int" or (isinstance(low, int) and isinstance(high, int) and name not in ("lr", "dropout", "warmup_ratio"))
    return ParamSpec(name, "int" if is_int else "float", low, high, log=log)


def space_from_dict(raw: Mapping, where: str = "search space") -> SearchSpace:
    unknown = set(raw) - {"params", "baseline"}
    if unknown:
        raise DataError(where, f"unknown section(s) {sorted(unknown)}; expected [params.NAME] and [baseline]")
    params = _default_params()
    for name, spec in (raw.get("params") or {}).items():
        if name not in KNOWN_PARAMS:
            raise DataError(where, f"params.{name}: unknown parameter; known: {', '.join(KNOWN_PARAMS)}")
        params[name] = _spec_from_mapping(name, spec, where)
    given = raw.get("params") or {}
    if "max_steps" in given and "epochs" not in given:
        # A step budget replaces the epoch count (max_steps wins in the trainer): don't search both.
        params.pop("epochs")
    baseline = dict(DEFAULT_BASELINE)
    for name, value in (raw.get("baseline") or {}).items():
        if name not in KNOWN_PARAMS:
            raise DataError(where, f"baseline.{name}: unknown parameter; known: {', '.join(KNOWN_PARAMS)}")
        baseline[name] = value
    space = SearchSpace(params=params, baseline=baseline)
    space.check(where)  # first: a baseline outside a range that cannot work is the lesser problem
    for name, spec in space.params.items():
        if spec.kind == "fixed":
            continue
        if name not in baseline:
            raise DataError(where, f"baseline.{name}: missing; give the baseline run's value for every searched parameter")
        if not spec.contains(baseline[name]):
            raise DataError(where, f"baseline.{name} = {baseline[name]!r} lies outside the searched range {spec.describe()}")
    return space


def load_space(path: str | Path | None) -> SearchSpace:
    """The default space, overridden by a ``.toml`` / ``.yaml`` file when one is given."""
    if path is None:
        return space_from_dict({})
    path = Path(path)
    if not path.exists():
        raise DataError(path, "search-space file not found")
    from ..io import open_text

    with open_text(path) as fh:  # not UTF-8, a folder, unreadable: one line naming the file
        text = fh.read()
    if path.suffix == ".toml":
        import tomllib

        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise DataError(path, f"invalid TOML ({exc})") from None
    elif path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise LeantuneError(f"{path}: reading YAML needs PyYAML (`pip install pyyaml`); or write the space as TOML") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise DataError(path, f"invalid YAML ({exc})") from None
    else:
        raise DataError(path, "search-space file must end in .toml, .yaml or .yml")
    if not isinstance(raw, Mapping):
        raise DataError(path, "search-space file must hold a table/mapping at the top level")
    return space_from_dict(raw, str(path))


__all__ = ["KNOWN_PARAMS", "ParamSpec", "SearchSpace", "load_space", "space_from_dict"]
