"""Frozen records, made cheaply: what `@dataclass(frozen=True, slots=True)` makes,
in a tenth of the time.

`dataclasses` writes and compiles six methods for each class (`__init__`,
`__repr__`, `__eq__`, `__hash__`, `__setattr__`, `__delattr__`) and inspects
a signature to make a docstring: about a millisecond a class, and `gwc check`
loads some fifty such classes every time it starts, before it reads a line.
A `Record` subclass gets only its `__init__` compiled; equality, hashing and
repr are shared, and read the fields through one `operator.attrgetter`.
mypy reads a `Record` subclass as a frozen dataclass (PEP 681).

    class Ident(Record):
        span: Span = field(compare=False, repr=False)
        name: str
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import MISSING, FrozenInstanceError, field
from operator import attrgetter
from typing import Any, ClassVar, dataclass_transform

__all__ = ["Record", "field"]


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
class _RecordType(type):
    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any],
                **kwargs: Any) -> _RecordType:
        if not bases:  # Record itself
            return super().__new__(mcs, name, bases, namespace, **kwargs)
        names = tuple(namespace.get("__annotations__", {}))
        defaults: dict[str, Any] = {}
        compared, shown = [], []
        for attr in names:
            spec = namespace.pop(attr, MISSING)
            if isinstance(spec, dataclasses.Field):
                if spec.default_factory is not MISSING:
                    raise TypeError(f"{name}.{attr}: a record's defaults are values")
                default, compare, in_repr = spec.default, spec.compare, spec.repr
            else:
                default, compare, in_repr = spec, True, True
            if default is not MISSING:
                defaults[attr] = default
            elif defaults:
                raise TypeError(f"{name}.{attr}: a field without a default follows one with")
            if compare:
                compared.append(attr)
            if in_repr:
                shown.append(attr)
        namespace["__slots__"] = names
        namespace["__match_args__"] = names
        namespace["_compared"] = staticmethod(_getter(compared))
        namespace["_shown"] = tuple(shown)
        namespace["__init__"] = _init(name, names, defaults)
        return super().__new__(mcs, name, bases, namespace, **kwargs)


def _getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """The compared fields of a record, as a tuple, read in C."""
    if not names:
        return lambda record: ()
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda record: (one(record),)
    return attrgetter(*names)


def _init(name: str, names: tuple[str, ...], defaults: dict[str, Any]) -> Callable[..., None]:
    params = ", ".join(f"{n}=_d_{n}" if n in defaults else n for n in names)
    body = "".join(f"    _set(self, {n!r}, {n})\n" for n in names) or "    pass\n"
    source = f"def __init__(self, {params}):\n{body}" if names else f"def __init__(self):\n{body}"
    scope = {"_set": object.__setattr__, **{f"_d_{n}": v for n, v in defaults.items()}}
    exec(compile(source, f"<record {name}>", "exec"), scope)  # one small function, once
    init: Callable[..., None] = scope["__init__"]
    init.__qualname__ = f"{name}.__init__"
    return init


class Record(metaclass=_RecordType):
    """Base of the frozen records; see the module's docstring."""

    __slots__ = ()
    _compared: ClassVar[Any]  # the compared fields as a tuple: record -> tuple
    _shown: ClassVar[tuple[str, ...]]

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        same: bool = self._compared(self) == self._compared(other)
        return same

    def __hash__(self) -> int:
        return hash(self._compared(self))

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._shown)
        return f"{type(self).__qualname__}({shown})"

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __copy__(self) -> Record:
        return self  # immutable: a copy would be equal in every way

    def __deepcopy__(self, memo: dict[int, Any]) -> Record:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        names: tuple[str, ...] = self.__match_args__  # type: ignore[attr-defined]
        return (type(self), tuple(getattr(self, n) for n in names))
