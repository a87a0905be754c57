"""What is wrong with a request body, in one sentence that names the field: for the checks
no model can state (depth, storable text, integer range) and for pydantic's errors."""

from __future__ import annotations

from collections import deque
from typing import Any, get_args

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from .models import MAX_INTEGER, PATTERN_WORDS

MAX_DEPTH = 32  # arrays and objects inside one another; real requests use two or three
KINDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "an object",
    "model_type": "an object",
    "list_type": "an array",
}
BOUNDS = {
    "greater_than_equal": ("at least", "ge"),
    "greater_than": ("more than", "gt"),
    "less_than_equal": ("at most", "le"),
}


def _name(path: str) -> str:
    return f"'{path}'" if path else "the body"


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def text_problem(value: str, path: str) -> str | None:
    """No NUL (PostgreSQL cannot store it) and no lone surrogate (not UTF-8) in any string."""
    if "\x00" in value:
        return f"{_name(path)} contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{_name(path)} is not valid Unicode text"
    return None


def depth_problem(value: Any) -> str | None:
    """Arrays and objects nested deeper than MAX_DEPTH, found without recursion so that a
    hostile body cannot exhaust the stack here or later."""
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_DEPTH:
            return f"the body nests arrays and objects deeper than {MAX_DEPTH} levels"
        children = item.values() if isinstance(item, dict) else item
        todo.extend((child, depth + 1) for child in children)
    return None


def scalar_problem(value: Any) -> str | None:
    """What no field may hold, free-form ones (`context`) included: text that cannot be
    stored, an integer neither database stores. The first one in reading order."""
    todo: deque[tuple[Any, str]] = deque([(value, "")])
    while todo:
        item, path = todo.popleft()
        if isinstance(item, str):
            if problem := text_problem(item, path):
                return problem
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > MAX_INTEGER:
            return f"{_name(path)} is too large"
        elif isinstance(item, dict):
            for key, child in item.items():
                if problem := text_problem(key, _join(path, key)):
                    return problem
                todo.append((child, _join(path, key)))
        elif isinstance(item, list):
            todo.extend((child, _join(path, i)) for i, child in enumerate(item))
    return None


def _where(loc: tuple[str | int, ...]) -> str:
    path = ""
    for part in loc:
        path = f"{path} (its name)" if part == "[key]" else _join(path, part)
    return path


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _same_object(errors: list[ErrorDetails], kind: str) -> list[ErrorDetails]:
    """The errors of this kind about the same object as the first of them."""
    of_kind = [e for e in errors if e["type"] == kind]
    return [e for e in of_kind if e["loc"][:-1] == of_kind[0]["loc"][:-1]]


def _nullable(model: type[BaseModel], loc: tuple[str | int, ...]) -> bool:
    field = model.model_fields.get(str(loc[0])) if len(loc) == 1 else None
    annotation = field.annotation if field is not None else None
    return type(None) in get_args(annotation)


def describe(errors: list[ErrorDetails], model: type[BaseModel]) -> str:
    """The first thing wrong as a person reading the body would see it: unknown fields,
    then missing ones, then the first bad value."""
    if unknown := _same_object(errors, "extra_forbidden"):
        inside = unknown[0]["loc"][:-1]
        where = f" in {_name(_where(inside))}" if inside else ""
        names = ", ".join(repr(str(e["loc"][-1])[:60]) for e in unknown[:10])
        return f"unknown field{'s' if len(unknown) > 1 else ''}{where}: {names}"
    if missing := _same_object(errors, "missing"):
        names = ", ".join(_name(_where(e["loc"])) for e in missing)
        return f"{names} {'is' if len(missing) == 1 else 'are'} required"
    error = errors[0]
    name, kind, ctx = _name(_where(error["loc"])), error["type"], error.get("ctx", {})
    if kind in KINDS:
        return f"{name} must be {KINDS[kind]}" + (
            " or null" if _nullable(model, error["loc"]) else ""
        )
    if kind == "literal_error":
        choices = ctx["expected"].replace("'", "").replace(" or ", ", ")
        return f"{name} must be one of {choices}, not {error['input']!r:.60}"
    if kind == "string_too_short":
        return f"{name} must not be empty"
    if kind == "string_too_long":
        return f"{name} is longer than {ctx['max_length']} characters"
    if kind == "string_pattern_mismatch":
        return f"{name} must be {PATTERN_WORDS.get(ctx['pattern'], ctx['pattern'])}"
    if kind == "too_long":
        things = "fields" if isinstance(error["input"], dict) else "items"
        return f"{name} has more than {ctx['max_length']} {things}"
    if kind in BOUNDS:
        words, bound = BOUNDS[kind]
        return f"{name} must be {words} {_number(ctx[bound])}"
    if kind == "value_error":
        return f"{name} {ctx['error']}"
    return f"{name}: {error['msg']}"
