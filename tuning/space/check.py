"""Reading and checking a search-space file: every problem found, one line each.

``tuning.space.file`` turns the checked parameters into a ``Space``; this module knows the
format (the keys of each table) and the knobs the network and loops have (``KNOBS``).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tuning.space.hyperparameters import KNOBS
from tuning.study.errors import UsageError

REQUIRED = ("lr", "batch_size", "optimizer")  # every trial needs these to train at all
TYPES = ("float", "int", "categorical", "fixed")
_RANGE_KEYS = ("type", "low", "high", "log", "step", "when", "by")
_KEYS = {"float": _RANGE_KEYS, "int": _RANGE_KEYS, "categorical": ("type", "choices", "when"),
         "fixed": ("type", "value", "when")}

Scalar = bool | int | float | str
Bounds = tuple[float, float]


_KIND_WORDS = {"float": "number", "int": "integer"}  # the kinds a range can have


class SpaceError(UsageError):
    """A space file cannot be used; one line per problem, each naming the file and parameter."""


@dataclass(frozen=True)
class Param:
    """One parameter of a space, as its table in the file describes it."""

    name: str
    type: str  # float, int, categorical or fixed
    low: float | None = None  # float and int ranges (an int's bounds are ints)
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Scalar, ...] = ()  # categorical
    value: Any = None  # fixed
    when: dict[str, tuple[Scalar, ...]] = field(default_factory=dict)  # exists only if all hold
    by: dict[str, dict[Scalar, Bounds]] = field(default_factory=dict)  # range per choice


def check(text: str, source: str) -> tuple[Param, ...]:
    """The parameters of a space file's ``text``, checked; ``source`` names it in errors.

    Raises:
        SpaceError: one line per problem found, every problem at once.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        what, _, where = str(exc).removesuffix(")").rpartition(" (")  # "... (at line 3, ...)"
        raise SpaceError(f"{source}: TOML syntax error {where}: {what}") from None
    errors: list[str] = []
    params = []
    for key, table in data.items():
        if key not in KNOBS:
            errors.append(f"{key}: unknown parameter; the network and loops have: "
                          + ", ".join(sorted(KNOBS)))
        elif not isinstance(table, dict):
            errors.append(f"{key}: must be a table: [{key}] with a type and its keys")
        elif (param := _read_param(key, table, errors)) is not None:
            params.append(param)
    for key in REQUIRED:
        if key not in data:
            errors.append(f"{key}: missing; every space defines {', '.join(REQUIRED)} "
                          "(any type; fixed is allowed)")
        elif isinstance(data[key], dict) and "when" in data[key]:
            errors.append(f"{key}: must not have 'when'; every trial needs {key}")
    linked = [_link(p, params, set(data) & set(KNOBS), errors) for p in params]
    for cycle in order(linked)[1]:
        errors.append(f"{cycle[0]}: 'when' and 'by' go round in a cycle: "
                      + " -> ".join([*cycle, cycle[0]]))
    if errors:
        raise SpaceError("\n".join(f"{source}: {line}" for line in errors))
    return tuple(linked)


def _read_param(name: str, table: Mapping[str, Any], errors: list[str]) -> Param | None:
    kind, before = table.get("type"), len(errors)
    if kind not in TYPES:
        got = "missing key 'type'" if kind is None else f"unknown type {show(kind)}"
        errors.append(f"{name}: {got}; allowed: {', '.join(TYPES)}")
        return None
    errors += [f"{name}: unknown key {key!r}; allowed: {', '.join(_KEYS[kind])}"
               for key in table if key not in _KEYS[kind]]
    knob = KNOBS[name]
    fits = (knob.kind, "categorical", "fixed") if knob.kind in _KIND_WORDS else TYPES[2:]
    if kind not in fits:
        errors.append(f"{name}: type {kind!r} does not fit; {name} takes {knob.allowed}, "
                      f"so use {' or '.join(fits)}")
        return None
    fields: dict[str, Any] = {"when": _read_when(name, table.get("when"), errors)}
    if kind == "categorical":
        fields["choices"] = _read_choices(name, table.get("choices"), errors)
    elif kind == "fixed":
        if "value" not in table:
            errors.append(f"{name}: missing key 'value'; a fixed parameter needs one")
        else:
            fields["value"] = _legal(name, "value", table["value"], errors)
    else:
        fields |= _read_range(name, kind, table, errors)
    return Param(name, kind, **fields) if len(errors) == before else None


def _read_choices(name: str, choices: Any, errors: list[str]) -> tuple[Scalar, ...]:
    if not isinstance(choices, list):
        errors.append(f"{name}: choices must be a list such as [\"a\", \"b\"] "
                      + ("(missing)" if choices is None else f"(got {show(choices)})"))
        return ()
    if not choices:
        errors.append(f"{name}: choices must not be empty")
    for i, choice in enumerate(choices):
        if any(same(choice, c) for c in choices[:i]):
            errors.append(f"{name}: choices must not repeat (got {show(choice)} again)")
    return tuple(_legal(name, "choice", choice, errors) for choice in choices)


def _read_range(name: str, kind: str, table: Mapping[str, Any], errors: list[str]
                ) -> dict[str, Any]:
    log, step = table.get("log", False), table.get("step")
    if not isinstance(log, bool):
        errors.append(f"{name}: log must be true or false (got {show(log)})")
    if step is not None and log is True:
        errors.append(f"{name}: step and log cannot be used together")
    elif step is not None and not (_is_kind(kind, step) and step > 0):
        errors.append(f"{name}: step must be a positive {_KIND_WORDS[kind]} (got {show(step)})")
    low, high = _read_bounds(name, "", table, kind, log is True, errors)
    by: dict[str, dict[Any, Bounds]] = {}
    raw = table.get("by", {})
    if not (isinstance(raw, dict) and all(isinstance(r, dict) for r in raw.values())):
        errors.append(f"{name}: 'by' must hold tables such as [{name}.by.optimizer.SGD]")
        raw = {}
    if len(raw) > 1:
        errors.append(f"{name}: 'by' may name one parameter (got {', '.join(raw)})")
    for other, ranges in raw.items():
        by[other] = {}
        for choice, bounds in ranges.items():
            where = f"by.{other}.{choice}: "
            if not isinstance(bounds, dict):
                errors.append(f"{name}: {where}must be a table with low and high")
                continue
            errors += [f"{name}: {where}unknown key {key!r}; allowed: low, high"
                       for key in bounds if key not in ("low", "high")]
            by[other][choice] = _read_bounds(name, where, bounds, kind, log is True, errors)
    return {"low": low, "high": high, "log": log is True, "step": step, "by": by}


def _read_bounds(name: str, where: str, table: Mapping[str, Any], kind: str, log: bool,
                 errors: list[str]) -> tuple[Any, Any]:
    before = len(errors)
    for key in ("low", "high"):
        if key not in table:
            errors.append(f"{name}: {where}missing key {key!r}; a range needs low and high")
        elif not _is_kind(kind, table[key]):
            errors.append(f"{name}: {where}{key} must be a finite {_KIND_WORDS[kind]} "
                          f"(got {show(table[key])})")
    if len(errors) > before:
        return None, None
    low, high = table["low"], table["high"]
    if log and low <= 0:
        errors.append(f"{name}: {where}log needs low > 0 (got {show(low)})")
    else:
        low = _legal(name, f"{where}low", low, errors)
    high = _legal(name, f"{where}high", high, errors)
    if len(errors) == before and not low < high:
        errors.append(f"{name}: {where}low must be below high "
                      f"(got low {show(table['low'])}, high {show(table['high'])})")
    return low, high


def _read_when(name: str, when: Any, errors: list[str]) -> dict[str, tuple[Scalar, ...]]:
    if when is None:
        return {}
    if not isinstance(when, dict) or not when:
        errors.append(f"{name}: 'when' must be a table such as {{ optimizer = \"SGD\" }}")
        return {}
    values = {other: tuple(v) if isinstance(v, list) else (v,) for other, v in when.items()}
    errors += [f"{name}: 'when' lists no values for {other!r}" for other, v in values.items()
               if not v]
    return values


def _legal(name: str, what: str, value: Any, errors: list[str]) -> Any:
    """The value as the knob takes it (an int as a float for a float knob), noting if illegal."""
    knob = KNOBS[name]
    if not (_is_kind(knob.kind, value) and knob.legal(value)):
        errors.append(f"{name}: {what} {show(value)} is not allowed; {name} takes {knob.allowed}")
    return float(value) if knob.kind == "float" and _is_kind("float", value) else value


def _link(param: Param, params: list[Param], defined: set[str], errors: list[str]) -> Param:
    """Check what 'when' and 'by' refer to; key 'by' ranges by the choices themselves."""
    named = {p.name: p for p in params}

    def choices_of(word: str, other: str, types: tuple[str, ...]) -> tuple[Scalar, ...]:
        target = named.get(other)
        if other == param.name:
            errors.append(f"{param.name}: {word} names the parameter itself")
        elif target is None and other not in defined:
            errors.append(f"{param.name}: {word} names unknown parameter {other!r}")
        elif target is not None and target.type not in types:
            errors.append(f"{param.name}: {word} names {other!r}, which is {target.type}; "
                          f"it must name a {' or '.join(types)} parameter")
        elif target is not None:
            return target.choices if target.type == "categorical" else (target.value,)
        return ()

    def missing(word: str, other: str, value: Any, choices: tuple[Scalar, ...]) -> None:
        errors.append(f"{param.name}: {word} value {show(value)} is not among {other}'s "
                      f"choices ({', '.join(map(show, choices))})")

    for other, values in param.when.items():
        choices = choices_of("'when'", other, ("categorical", "fixed"))
        for value in values if choices else ():
            if not any(same(value, c) for c in choices):
                missing("'when'", other, value, choices)
    by: dict[str, dict[Scalar, Bounds]] = {}
    for other, ranges in param.by.items():
        choices, by[other] = choices_of("'by'", other, ("categorical",)), {}
        for key, bounds in ranges.items() if choices else ():
            match = [c for c in choices if show(c, quote=False) == key]
            if not match:
                missing("'by'", other, key, choices)
            else:
                by[other][match[0]] = bounds
    return replace(param, by=by)


def order(params: list[Param] | tuple[Param, ...]) -> tuple[list[Param], list[list[str]]]:
    """Sampling order (file order, each after what it depends on) and any dependency cycles."""
    names = {p.name for p in params}
    deps = {p.name: [d for d in (*p.when, *p.by) if d in names and d != p.name] for p in params}
    order: list[Param] = []
    done: set[str] = set()
    cycles: list[list[str]] = []
    pending = list(params)
    while pending:
        ready = next((p for p in pending if set(deps[p.name]) <= done), None)
        if ready is not None:
            order.append(ready)
            done.add(ready.name)
            pending.remove(ready)
            continue
        path = [pending[0].name]  # every pending parameter waits on another pending one
        while (step := next(d for d in deps[path[-1]] if d not in done)) not in path:
            path.append(step)
        cycles.append(path[path.index(step):])
        done.update(cycles[-1])  # left out of the order; report the cycle and go on
        pending = [p for p in pending if p.name not in done]
    return order, cycles


def _is_kind(kind: str, value: Any) -> bool:
    if kind in ("bool", "str"):
        return isinstance(value, bool if kind == "bool" else str)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) if kind == "int" else math.isfinite(value)


def same(a: Any, b: Any) -> bool:
    """Equal as TOML values: 1 and 1.0 are, true and 1 are not."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def show(value: Any, quote: bool = True) -> str:
    """A value as TOML writes it (strings quoted unless ``quote`` is false)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value) if quote else value
    return f"{value:.12g}" if isinstance(value, float) and not quote else str(value)
