"""Typed arguments: each hyperparameter and option declares its type and range where it is defined.

A type annotation is the schema. ``Annotated[int, Range(1)]`` is an integer of at least 1,
``Literal["gaussian", "poisson"]`` one of two strings, ``X | None`` an X or nothing. One checker
(:func:`violation`) reads them, for the fields of a model family (:meth:`probdyn.model.Model`
checks its own before anything else), the keyword options of a function (a loader, a simulator,
an evidence method: :func:`check_options`) and the sections of a run configuration
(``probdyn.app.config``). Values are what TOML and JSON give: a list stands for a tuple, an int
for a float; a bool is never a number.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal


@dataclasses.dataclass(frozen=True)
class Range:
    """A closed or half-open interval of numbers: ``low <= x <= high`` (``<`` where open)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        def number(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        if self.low is not None and self.high is not None:
            left, right = "(["[not self.low_open], ")]"[not self.high_open]
            return f"in {left}{number(self.low)}, {number(self.high)}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {number(self.low)}"
        return "" if self.high is None else f"{'<' if self.high_open else '<='} {number(self.high)}"


#: An integer of at least 1 (a size or a count).
Count = Annotated[int, Range(1)]
#: An integer of at least 0.
NonNegativeInt = Annotated[int, Range(0)]
#: A number above 0 (a scale, a time constant, a rate).
Positive = Annotated[float, Range(0, low_open=True)]
#: A number of at least 0 (a weight, a concentration).
NonNegative = Annotated[float, Range(0)]
#: A number in [0, 1).
Fraction = Annotated[float, Range(0, 1, high_open=True)]


def _name(kind) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        kind, getattr(kind, "__name__", str(kind))
    )


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def violation(value: Any, annotation: Any) -> str | None:
    """None if ``value`` fits ``annotation``, else what was expected (``"an integer >= 1"``).

    Annotations it does not know (mappings of distributions, callables) accept anything: those
    are checked where they are used.
    """
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        kind, *extras = typing.get_args(annotation)
        wrong = violation(value, kind)
        if wrong:
            return wrong + "".join(f" {e}" for e in extras if isinstance(e, Range))
        for extra in extras:
            if isinstance(extra, Range) and value not in extra:
                return f"{_name(kind)} {extra}"
        return None
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(annotation)
        wrongs = [violation(value, option) for option in options]
        return None if None in wrongs else " or ".join(wrongs)
    if origin is Literal:
        choices = typing.get_args(annotation)
        ok = any(value == c and type(value) is type(c) for c in choices)
        return None if ok else f"one of {list(choices)}"
    if origin in (tuple, list):
        item = (typing.get_args(annotation) or (Any,))[0]
        if not isinstance(value, tuple | list) or any(violation(v, item) for v in value):
            return f"a list, each {violation(object(), item) or 'anything'}"
        return None
    if annotation is type(None):
        return None if value is None else "nothing"
    if annotation is bool:
        return None if isinstance(value, bool) else _name(bool)
    if annotation is int:
        return None if _is_integer(value) else _name(int)
    if annotation is float:
        return None if _is_number(value) and math.isfinite(value) else "a finite number"
    if annotation is str:
        return None if isinstance(value, str) else _name(str)
    if annotation is dict or origin in (dict, Mapping):
        return None if isinstance(value, Mapping) else "a table"
    return None


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass's fields (ranges kept)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def check_options(
    function: Callable, options: Mapping[str, Any], where: str, *, skip: tuple[str, ...] = ()
) -> str | None:
    """None if ``function`` takes each of ``options`` by name with a fitting value, else why not.

    The reason names the option and the value (``"num_trials = 'x'; expected an integer >= 1"``).
    ``skip`` names parameters a caller fills itself (refused when given).
    """
    signature = inspect.signature(function)
    hints = typing.get_type_hints(function, include_extras=True)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    named = {
        name
        for name, p in signature.parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name not in skip
    }
    unknown = sorted(set(options) - named)
    if unknown and not takes_any:
        return f"{where}: unknown option(s) {unknown}; expected some of {sorted(named)}"
    for name, value in options.items():
        wrong = violation(value, hints.get(name, Any)) if name in named else None
        if wrong:
            return f"{where}.{name} = {value!r}; expected {wrong}"
    return None
