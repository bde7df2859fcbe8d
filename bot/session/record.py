"""The one serialisation of the session record: frozen dataclasses to JSON-ready data and back.

Driven by the dataclasses' own type hints, so a new field of a step's state needs no code here.
A field missing from stored data takes its default (records written before the field existed).
Handles what the step models use: str, int, float, bool, ``None`` unions, ``Literal``, enums,
``timedelta`` (seconds), ``tuple[X, ...]``, ``tuple[X, Y]``, ``frozenset[X]`` and nested
dataclasses. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from datetime import timedelta
from functools import cache
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

__all__ = ["decode", "encode"]

T = TypeVar("T")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def encode(value: object) -> Any:
    """``value`` as JSON-ready data (dicts, lists, str, numbers, bool, None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, frozenset):
        return sorted(encode(item) for item in value)
    if isinstance(value, tuple | list):
        return [encode(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"the session record cannot hold a {type(value).__name__}")


def decode(kind: type[T], data: Any) -> T:
    """The inverse of ``encode`` for a value of type ``kind`` (``TypeError``, ``ValueError``
    when the data does not fit)."""
    return typing.cast("T", _decode(kind, data))


def _decode(hint: Any, data: Any) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if data is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _decode(option, data)
            except (TypeError, ValueError, KeyError) as error:
                errors.append(error)
        raise ValueError(f"{data!r} is none of {hint}: {errors}")
    if origin is Literal:
        if data not in get_args(hint):
            raise ValueError(f"{data!r} is not one of {get_args(hint)}")
        return data
    if origin is tuple:
        args = get_args(hint)
        if not isinstance(data, list):
            raise TypeError(f"expected a list, got {data!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], item) for item in data)
        if len(args) != len(data):
            raise ValueError(f"expected {len(args)} items, got {data!r}")
        return tuple(_decode(arg, item) for arg, item in zip(args, data, strict=True))
    if origin is frozenset:
        if not isinstance(data, list):
            raise TypeError(f"expected a list, got {data!r}")
        (arg,) = get_args(hint)
        return frozenset(_decode(arg, item) for item in data)
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint):
            return _decode_dataclass(hint, data)
        if issubclass(hint, enum.Enum):
            return hint(data)
        if hint is timedelta:
            return timedelta(seconds=_number(data))
        if hint is float:
            return _number(data)
        if hint is bool or hint is str or hint is int:
            if type(data) is not hint:
                raise TypeError(f"expected {hint.__name__}, got {data!r}")
            return data
    raise TypeError(f"the session record cannot hold a {hint}")


def _number(data: Any) -> float:
    if isinstance(data, bool) or not isinstance(data, int | float):
        raise TypeError(f"expected a number, got {data!r}")
    return float(data)


def _decode_dataclass(cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"expected an object for {cls.__name__}, got {data!r}")
    hints = _hints(cls)
    values = {
        f.name: _decode(hints[f.name], data[f.name])
        for f in dataclasses.fields(cls)
        if f.init and f.name in data
    }
    return cls(**values)
