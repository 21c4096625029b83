"""Search spaces as TOML files: load one (checked by ``tuning.space.check``), sample it.

A file holds one table per parameter, named after a knob of the network or training loops
(``tuning.space.check.KNOBS``); ``tuning/space/builtin/*.toml`` document the format by example. A
study stores its space's text, so every tool rebuilds the space from the study alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from tuning.space.check import Param, SpaceError, check, order, same, show
from tuning.study.protocol import SPACE_NAME_ATTR, space_text

BUILTIN = ("tutorial", "extended")
SPACES_DIR = Path(__file__).parent / "builtin"
__all__ = ["BUILTIN", "SPACES_DIR", "Param", "Space", "SpaceError", "builtin_path",
           "load_space", "parse_space"]


@dataclass(frozen=True)
class Space:
    """A checked search space: its name, the file's exact text and its parameters in file order."""

    name: str
    text: str
    params: tuple[Param, ...]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every active parameter; fixed ones are included but not suggested to Optuna."""
        values: dict[str, Any] = {}
        for param in order(self.params)[0]:
            if _active(param, values):
                values[param.name] = _sample(param, trial, values)
        return values

    def fixed(self) -> dict[str, Any]:
        """Every fixed parameter's value, conditional ones included."""
        return {p.name: p.value for p in self.params if p.type == "fixed"}

    def complete(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A stored trial's params plus the fixed values that were active for it."""
        values: dict[str, Any] = {}
        for param in order(self.params)[0]:
            if not _active(param, values):
                continue
            if param.type == "fixed":
                values[param.name] = param.value
            elif param.name in params:
                values[param.name] = params[param.name]
        return values | {key: value for key, value in params.items() if key not in values}

    def baseline(self, core: Mapping[str, Any], defaults: Mapping[str, Any]
                 ) -> dict[str, Any] | None:
        """The tutorial's point as this space's parameters, or None where the space lacks it.

        ``core`` holds the tutorial's lr, batch size and optimizer; ``defaults`` every knob's
        tutorial value. The point is the space's only where each active parameter can take
        its tutorial value (fixed ones must equal it); the sampled ones are returned, to queue.
        """
        values: dict[str, Any] = {}
        for param in order(self.params)[0]:
            if not _active(param, values):
                continue
            value = core.get(param.name, defaults[param.name])
            if not _holds(param, value, values):
                return None
            values[param.name] = value
        return {key: value for key, value in values.items()
                if next(p for p in self.params if p.name == key).type != "fixed"}

    def table(self) -> list[tuple[str, str, str, str]]:
        """Rows (name, type, range or choices or value, condition) for people, in file order."""
        return [(p.name, p.type, _describe(p), _condition(p)) for p in self.params]


def builtin_path(name: str) -> Path:
    """The file of a built-in space."""
    if name not in BUILTIN:
        raise SpaceError(f"{name!r} is not a built-in space; they are: {', '.join(BUILTIN)}")
    return SPACES_DIR / f"{name}.toml"


def load_space(name_or_path: str) -> Space:
    """Read a built-in space by name, or a space file by path. Raises SpaceError."""
    builtin = name_or_path in BUILTIN
    path = builtin_path(name_or_path) if builtin else Path(name_or_path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeError) as exc:
        why = ("no such file" if isinstance(exc, FileNotFoundError) else "not UTF-8 text"
               if isinstance(exc, UnicodeError) else f"cannot be read ({exc.strerror})")
        raise SpaceError(f"{name_or_path}: {why}; give a space file's path or a built-in "
                         f"space: {', '.join(BUILTIN)}") from None
    return Space(name_or_path if builtin else path.stem, text, check(text, path.name))


def space_of(text: str | None, name: str | None) -> Space:
    """The space a study recorded (its text and name), or the tutorial's where it recorded
    none: studies from before spaces were files were all searched in it."""
    return load_space("tutorial") if text is None else parse_space(text, name or "<study>")


def study_space(study: optuna.Study) -> Space:
    """The space ``study`` was searched in: ``space_of`` the text and name it recorded."""
    return space_of(space_text(study), study.user_attrs.get(SPACE_NAME_ATTR))


def in_space_order(study: optuna.Study, names: set[str]) -> list[str]:
    """``names`` in the order of ``study``'s space file; any it does not hold last, sorted."""
    ordered = [p.name for p in study_space(study).params if p.name in names]
    return ordered + sorted(names - set(ordered))


def check_resume(study_name: str, stored: tuple[str | None, str | None],
                 asked: tuple[str | None, str | None]) -> None:
    """Refuse to resume a study in a space other than the one it was searched in.

    ``stored`` and ``asked`` are (text, name) pairs as ``space_of`` takes them; spaces are the
    same when their parameters are, whatever the comments or the file's name.

    Raises:
        SpaceError: one line naming the study, both spaces and what to do.
    """
    before, now = space_of(*stored), space_of(*asked)
    if before.params != now.params:
        raise SpaceError(f"study {study_name!r} was searched in the space {before.name!r}, but "
                         f"this run asks for {now.name!r}; rerun with --space {before.name} "
                         "(or the same file) to resume it, or pick another --study-name.")


def parse_space(text: str, name: str = "<study>") -> Space:
    """Rebuild a space from its text (as a study stores it). Raises SpaceError."""
    return Space(name, text, check(text, name))


def _active(param: Param, values: Mapping[str, Any]) -> bool:
    return all(other in values and any(same(values[other], v) for v in allowed)
               for other, allowed in param.when.items())


def _holds(param: Param, value: Any, values: Mapping[str, Any]) -> bool:
    """Whether ``param`` can take ``value`` (given the values of what it depends on)."""
    if param.type == "fixed":
        return same(param.value, value)
    if param.type == "categorical":
        return any(same(value, c) for c in param.choices)
    low, high = _bounds(param, values)
    return isinstance(value, int | float) and low <= value <= high and (value > 0 or not param.log)


def _bounds(param: Param, values: Mapping[str, Any]) -> tuple[Any, Any]:
    """A range parameter's low and high, per the choice it depends on where it has ``by``."""
    return next((ranges[c] for other, ranges in param.by.items() for c in ranges
                 if other in values and same(values[other], c)), (param.low, param.high))


def _sample(param: Param, trial: optuna.Trial, values: Mapping[str, Any]) -> Any:
    if param.type == "fixed":
        return param.value
    if param.type == "categorical":
        return trial.suggest_categorical(param.name, param.choices)
    low, high = _bounds(param, values)
    assert low is not None and high is not None  # a checked range has both
    if param.type == "int":
        return trial.suggest_int(param.name, int(low), int(high), step=int(param.step or 1),
                                 log=param.log)
    return trial.suggest_float(param.name, low, high, step=param.step, log=param.log)


def _describe(param: Param) -> str:
    if param.type == "categorical":
        return ", ".join(show(c, quote=False) for c in param.choices)
    if param.type == "fixed":
        return show(param.value, quote=False)
    text = f"{show(param.low, False)}..{show(param.high, False)}"
    text += " log" if param.log else ""
    text += f" step {show(param.step, False)}" if param.step is not None else ""
    return text + "".join(f"; {show(c, False)}: {show(lo, False)}..{show(hi, False)}"
                          for ranges in param.by.values() for c, (lo, hi) in ranges.items())


def _condition(param: Param) -> str:
    return " and ".join(
        f"{other} = {show(v[0], False)}" if len(v) == 1
        else f"{other} in {', '.join(show(x, False) for x in v)}"
        for other, v in param.when.items())


