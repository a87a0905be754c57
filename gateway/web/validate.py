"""Request bodies checked against the same JSON Schemas /openapi.json publishes (a subset)."""

from __future__ import annotations

import functools
import re
from typing import Any

TYPES: dict[str, str] = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}
MAX_INTEGER = 2**63 - 1  # what both databases store
MAX_DEPTH = 32  # arrays and objects inside one another; real requests use two or three


class Invalid(ValueError):
    """The body does not match its schema; `str()` names the field and what is wrong."""


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _name(path: str) -> str:
    return f"'{path}'" if path else "the body"


def check_text(value: str, path: str) -> None:
    """Every string: no NUL (PostgreSQL cannot store it) and no lone surrogate (not UTF-8)."""
    if "\x00" in value:
        raise Invalid(f"{_name(path)} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{_name(path)} is not valid Unicode text") from None


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Raise `Invalid` when arrays and objects nest deeper than `limit` (checked without
    recursion, so a hostile body cannot exhaust the stack here or later)."""
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if not isinstance(item, dict | list):
            continue
        if depth > limit:
            raise Invalid(f"the body nests arrays and objects deeper than {limit} levels")
        children = item.values() if isinstance(item, dict) else item
        todo.extend((child, depth + 1) for child in children)


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns are ECMA-262: `$` matches only at the very end, while Python's
    # also matches before a final newline (a header name "X-A" and a newline would pass).
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def validate(value: Any, schema: dict[str, Any], path: str = "") -> None:
    """Raise `Invalid` naming the first thing in `value` that `schema` does not allow."""
    allowed = schema.get("type")
    if allowed is not None:
        kinds = [allowed] if isinstance(allowed, str) else list(allowed)
        kind = _type_of(value)
        if kind not in kinds and not (kind == "integer" and "number" in kinds):
            wanted = " or ".join(TYPES[k] for k in kinds)
            raise Invalid(f"{_name(path)} must be {wanted}")
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(str(c) for c in schema["enum"])
        raise Invalid(f"{_name(path)} must be one of {choices}, not {value!r}")
    if isinstance(value, str):
        check_text(value, path)
        if len(value) < schema.get("minLength", 0):
            raise Invalid(f"{_name(path)} must not be empty")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise Invalid(f"{_name(path)} is longer than {schema['maxLength']} characters")
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            # A patterned schema's description says in words what the pattern allows.
            raise Invalid(f"{_name(path)} must be {schema.get('description', schema['pattern'])}")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise Invalid(f"{_name(path)} must be at least {schema['minimum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            raise Invalid(f"{_name(path)} must be more than {schema['exclusiveMinimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise Invalid(f"{_name(path)} must be at most {schema['maximum']}")
        if isinstance(value, int) and abs(value) > MAX_INTEGER:
            raise Invalid(f"{_name(path)} is too large")
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise Invalid(f"{_name(path)} has more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            validate(item, schema.get("items", {}), f"{path}[{i}]")
    elif isinstance(value, dict):
        _validate_object(value, schema, path)


def _validate_object(value: dict[str, Any], schema: dict[str, Any], path: str) -> None:
    properties: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    if extra is False:
        unknown = [k for k in value if k not in properties]
        if unknown:
            where = f" in {_name(path)}" if path else ""
            names = ", ".join(repr(k[:60]) for k in unknown[:10])
            raise Invalid(f"unknown field{'s' if len(unknown) > 1 else ''}{where}: {names}")
    missing = [k for k in schema.get("required", ()) if k not in value]
    if missing:
        names = ", ".join(f"'{_join(path, k)}'" for k in missing)
        raise Invalid(f"{names} {'is' if len(missing) == 1 else 'are'} required")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        raise Invalid(f"{_name(path)} has more than {schema['maxProperties']} fields")
    names_schema = schema.get("propertyNames")
    for key, item in value.items():
        check_text(key, _join(path, key))
        if names_schema is not None:
            validate(key, names_schema, f"{_join(path, key)} (its name)")
        sub = properties.get(key, extra if isinstance(extra, dict) else {})
        validate(item, sub, _join(path, key))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
