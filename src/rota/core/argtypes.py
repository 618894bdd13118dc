"""Checking a job's arguments against the simple annotations of its task at submit time:
``int``, ``float`` (an ``int`` is accepted), ``str``, ``bool`` (never an ``int``, and an
``int`` is never a ``bool``), ``list``/``tuple`` (either one, as JSON has only arrays),
``dict``, ``None``, and unions of these (``Optional[int]``, ``int | None``). Parameterised
containers are checked as containers (``list[int]`` as ``list``); any other annotation
(``Any``, a class, a ``TypedDict``, a ``Literal``...) is not checked."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from rota.core.errors import InvalidPayload

Allowed = tuple[type, ...]
_NONE = type(None)
_SIMPLE: dict[Any, Allowed] = {
    int: (int,),
    float: (int, float),
    str: (str,),
    bool: (bool,),
    list: (list, tuple),
    tuple: (list, tuple),
    dict: (dict,),
    _NONE: (_NONE,),
    None: (_NONE,),
}
_NAMES = {int: "int", float: "float", str: "str", bool: "bool", list: "list", tuple: "list"}


def allowed_types(annotation: Any) -> Allowed | None:
    """The Python types a JSON value may have for ``annotation``; ``None``: not checked."""
    try:
        if annotation in _SIMPLE:
            return _SIMPLE[annotation]
    except TypeError:  # an unhashable annotation
        return None
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, dict):
        return _SIMPLE[origin]
    if origin is typing.Union or origin is types.UnionType:
        out: list[type] = []
        for member in typing.get_args(annotation):
            sub = allowed_types(member)
            if sub is None:
                return None
            out.extend(sub)
        return tuple(dict.fromkeys(out))
    return None


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The function's annotations with strings (``from __future__ import annotations``)
    resolved; none when they cannot be (then nothing is checked)."""
    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}


def _matches(value: Any, allowed: Allowed) -> bool:
    if type(value) is bool:  # bool is a subclass of int, but not an int argument here
        return bool in allowed
    return isinstance(value, allowed)


def _describe(allowed: Allowed) -> str:
    names = dict.fromkeys(
        "None" if t is _NONE else _NAMES.get(t, t.__name__)
        for t in allowed
        if not (t is int and float in allowed)
    )
    return " or ".join(names)


class ArgumentTypes:
    """The checkable parameters of one function, read once."""

    def __init__(self, fn: Callable[..., Any], signature: inspect.Signature) -> None:
        self.signature = signature
        self.by_name: dict[str, Allowed] = {}
        self.var_positional: Allowed | None = None
        self.var_keyword: Allowed | None = None
        self.positional: list[Allowed | None] = []  # by position, for calls without names
        hints = _hints(fn)
        for param in signature.parameters.values():
            allowed = allowed_types(hints.get(param.name, inspect.Parameter.empty))
            if param.kind is param.VAR_POSITIONAL:
                self.var_positional = allowed
            elif param.kind is param.VAR_KEYWORD:
                self.var_keyword = allowed
            else:
                if param.kind is not param.KEYWORD_ONLY:
                    self.positional.append(allowed)
                if allowed is not None:
                    self.by_name[param.name] = allowed
        self.empty = not self.by_name and self.var_positional is self.var_keyword is None

    def check(self, task: str, args: Sequence[Any], kwargs: dict[str, Any], skip: int) -> None:
        """Raise ``InvalidPayload`` naming the first argument whose type does not fit
        (the first ``skip`` positional arguments are not checked: results of parents)."""
        if self.empty:
            return
        if kwargs or self.var_positional is not None or len(args) > len(self.positional):
            bound = self.signature.bind(*args, **kwargs)  # the caller checked that it binds
            names = list(bound.arguments)
            for index, name in enumerate(names):
                value = bound.arguments[name]
                kind = self.signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_POSITIONAL:
                    if self.var_positional is not None:
                        for i, item in enumerate(value):
                            if index + i >= skip:
                                self._one(task, f"*{name}[{i}]", item, self.var_positional)
                elif kind is inspect.Parameter.VAR_KEYWORD:
                    if self.var_keyword is not None:
                        for key, item in value.items():
                            self._one(task, key, item, self.var_keyword)
                elif name in self.by_name and index >= skip:
                    self._one(task, name, value, self.by_name[name])
            return
        params = list(self.signature.parameters)
        for index in range(skip, len(args)):
            allowed = self.positional[index]
            if allowed is not None:
                self._one(task, params[index], args[index], allowed)

    @staticmethod
    def _one(task: str, name: str, value: Any, allowed: Allowed) -> None:
        if not _matches(value, allowed):
            raise InvalidPayload(
                f"bad arguments for task {task!r}: {name} must be {_describe(allowed)}, "
                f"got {type(value).__name__} {value!r:.80}"
            )
