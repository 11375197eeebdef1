"""What is wrong with a JSON body, in Gravix's own words.

The decoders (msgspec, the standard library) word their errors as they like,
and reword them between releases (msgspec 0.23 changed how invalid UTF-8 is
reported). Gravix's answers must not change with them, so on the error path,
and only there, the reason is found again here: :func:`json_problem` for a
body that is not JSON, :func:`struct_problem` for JSON that does not fit a
``msgspec.Struct`` (the first problem, with the field's path), and
:func:`decode_body` that raises either as a 400.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import msgspec

from gravix.errors import BadRequest

S = TypeVar("S", bound=msgspec.Struct)


def json_problem(err: BaseException, body: bytes) -> str:
    """Why ``body`` is not JSON, with the byte offset when there is one."""
    if isinstance(err, RecursionError):
        return "it nests arrays or objects too deeply"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"it is not valid UTF-8 (byte {e.start})"
    try:
        json.loads(text)
    except RecursionError:
        return "it nests arrays or objects too deeply"
    except json.JSONDecodeError as e:
        if not text[e.pos :].strip():
            return "it ends before the JSON value is complete"
        return f"it has an unexpected character at byte {len(text[: e.pos].encode())}"
    return "it is not valid JSON"  # NaN or Infinity: only the standard library takes them


def decode_body(body: bytes, struct: type[S], *, unknown_hint: str = "") -> S:
    """``body`` decoded as ``struct``, or a 400 saying why in Gravix's words, naming
    the field; ``unknown_hint`` is added to the message about an unknown field."""
    try:
        return msgspec.json.decode(body, type=struct)
    except msgspec.ValidationError:
        try:
            raw = msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError) as e:  # the type failed before the syntax
            raise BadRequest(f"the body is not valid JSON: {json_problem(e, body)}") from None
        message, field = struct_problem(raw, struct)
        if message.startswith("unknown field"):
            message += unknown_hint
        raise BadRequest(message, field=field or None) from None
    except (msgspec.DecodeError, RecursionError) as e:
        raise BadRequest(f"the body is not valid JSON: {json_problem(e, body)}") from None


def struct_problem(
    raw: object, struct: type[msgspec.Struct], path: str = "", *, strict: bool = True
) -> tuple[str, str]:
    """The first reason ``raw`` (decoded JSON) is not a ``struct``: (message, field path).

    Unknown fields are reported before missing ones (unknown ones only if the
    struct forbids them), and those before wrong values, in the struct's field
    order. ``strict=False`` accepts what msgspec's lax mode does (numbers in
    strings). A ``raw`` that fits gives a generic reason.
    """
    where = path or "the body"
    if not isinstance(raw, dict):
        return f"{where} must be a JSON object", path
    fields = msgspec.structs.fields(struct)
    names = {f.encode_name for f in fields}
    if struct.__struct_config__.forbid_unknown_fields:
        for key in raw:
            if key not in names:
                return f"unknown field {key!r}", _join(path, str(key))
    for f in fields:
        if f.required and f.encode_name not in raw:
            return f"{f.encode_name!r} is required", _join(path, f.encode_name)
    for f in fields:
        if f.encode_name in raw:
            at = _join(path, f.encode_name)
            problem = _value_problem(raw[f.encode_name], f.type, at, strict)
            if problem is not None:
                return problem
    try:
        msgspec.convert(raw, struct, strict=strict)
    except msgspec.ValidationError as e:
        # The struct's own check (__post_init__) refused it: that message is ours.
        if isinstance(e.__cause__, ValueError):
            return f"{where}: {e.__cause__}", path
    return f"{where} is not valid", path


def _value_problem(value: object, kind: Any, path: str, strict: bool) -> tuple[str, str] | None:
    try:
        msgspec.convert(value, kind, strict=strict)
    except msgspec.ValidationError:
        pass
    else:
        return None
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return struct_problem(value, kind, path, strict=strict)
    if get_origin(kind) is list and isinstance(value, list):
        (item,) = get_args(kind)
        for i, element in enumerate(value):
            problem = _value_problem(element, item, f"{path}[{i}]", strict)
            if problem is not None:
                return problem
    return f"{path} must be {describe_type(kind)}", path


def describe_type(kind: Any) -> str:
    """A type as a reader of the API docs would say it: ``a string or an integer``."""
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(arg) for arg in get_args(kind))
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(arg) for arg in get_args(kind))
    if origin is list:
        return f"an array of {_plural(get_args(kind)[0])}"
    return _NAMES.get(
        kind, "an object" if _is_struct(kind) else f"a {getattr(kind, '__name__', kind)}"
    )


def _plural(kind: Any) -> str:
    described = describe_type(kind)
    for article in ("an ", "a "):
        if described.startswith(article) and " or " not in described:
            return described.removeprefix(article) + "s"
    return f"values that are each {described}"


def _is_struct(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, msgspec.Struct)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


_NAMES: dict[Any, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    type(None): "null",
    typing.Any: "a JSON value",
}
