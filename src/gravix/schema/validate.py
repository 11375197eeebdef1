"""Validation of decoded items, in two paths that accept exactly the same values.

The fast path runs on structs msgspec has already decoded and checked in C:
one cheap loop finishes them (timestamp to epoch ms, window, method,
patterns, route template and its stored form) and answers yes or no. Only
when it says no does the slow path run: it checks every field of every raw
item on its own, so the client learns every invalid item and field at once,
with messages written for people (see :mod:`gravix.schema.rules`). The
slow path is the reference; the fast path may only ever accept less, never
more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic, TypeVar

import msgspec

from gravix.errors import MAX_ITEM_ERRORS, InvalidFacts, ItemError, PayloadTooLarge
from gravix.schema.model import RequestFact, ServiceEvent
from gravix.schema.paths import normalise_path, path_problem
from gravix.schema.rules import (
    FIELD_MESSAGES,
    KNOWN_NAMES,
    KNOWN_PATHS,
    KNOWN_VERSIONS,
    NO_OFFSET_MESSAGE,
    datetime_ms,
    name_ok,
    normalise_method,
    route_of,
    version_ok,
    visible_ascii,
)

T = TypeVar("T", RequestFact, ServiceEvent)
Errors = list[tuple[str | None, str]]

_DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class Limits:
    """What a batch may contain; ``now_ms`` is passed in so tests control the clock."""

    now_ms: int
    raw_retention_days: int = 30
    max_future_seconds: int = 300
    max_batch_items: int = 10_000

    @property
    def oldest_ms(self) -> int:
        """The oldest accepted timestamp (inclusive)."""
        return self.now_ms - self.raw_retention_days * _DAY_MS

    @property
    def newest_ms(self) -> int:
        """The newest accepted timestamp (inclusive)."""
        return self.now_ms + self.max_future_seconds * 1000


class _Invalid(Exception):
    """A field value that broke a rule; the message is for the client."""


def _window_ms(value: int | datetime, limits: Limits) -> int:
    ms = value if isinstance(value, int) else datetime_ms(value)
    if ms < limits.oldest_ms:
        raise _Invalid(
            f"timestamp is older than the {limits.raw_retention_days}-day retention window"
        )
    if ms > limits.newest_ms:
        raise _Invalid(
            f"timestamp is more than {limits.max_future_seconds} seconds in the future; "
            "check the clock of the sending host"
        )
    return ms


def _require(ok: Callable[[str], bool], field: str) -> Callable[[Any, Limits], Any]:
    def check(value: Any, limits: Limits) -> Any:
        if value is not None and not ok(value):
            raise _Invalid(FIELD_MESSAGES[field])
        return value

    return check


def _method(value: str, limits: Limits) -> str:
    method = normalise_method(value)
    if method is None:
        raise _Invalid(FIELD_MESSAGES["method"])
    return method


def _path(value: str, limits: Limits) -> str:
    route = route_of(value)
    if route is None:
        raise _Invalid(path_problem(normalise_path(value)) or FIELD_MESSAGES["path"])
    return route


# Slow-path checks that run after the value has its msgspec type.
_CHECKS: Final[dict[str, Callable[[Any, Limits], Any]]] = {
    "event_id": _require(visible_ascii, "event_id"),
    "timestamp": _window_ms,
    "service": _require(name_ok, "service"),
    "method": _method,
    "path": _path,
    "env": _require(name_ok, "env"),
    "version": _require(version_ok, "version"),
}


# The two loops below are the hot path of ingestion: a membership test in a
# known-good set answers nearly every name, version and path without a call.
def _finish_facts(facts: list[RequestFact], limits: Limits) -> bool:
    """Fast path: normalise facts in place; False when any one breaks a rule."""
    oldest, newest = limits.oldest_ms, limits.newest_ms
    names, versions, paths = KNOWN_NAMES, KNOWN_VERSIONS, KNOWN_PATHS
    for fact in facts:
        ts: int | datetime = fact.timestamp  # a datetime until normalised (see model)
        if not isinstance(ts, int):
            ts = fact.timestamp = datetime_ms(ts)
        if ts < oldest or ts > newest:
            return False
        method = normalise_method(fact.method)
        if method is None:
            return False
        fact.method = method
        if not visible_ascii(fact.event_id):
            return False
        if fact.service not in names and not name_ok(fact.service):
            return False
        # The stored form of the path: placeholders all {id} (gravix.schema.paths).
        path = paths.get(fact.path) or route_of(fact.path)
        if path is None:
            return False
        fact.path = path
        env, version = fact.env, fact.version
        if env is not None and env not in names and not name_ok(env):
            return False
        if version is not None and version not in versions and not version_ok(version):
            return False
    return True


def _finish_events(events: list[ServiceEvent], limits: Limits) -> bool:
    """Fast path for events, like :func:`_finish_facts`."""
    oldest, newest = limits.oldest_ms, limits.newest_ms
    for event in events:
        ts: int | datetime = event.timestamp
        if not isinstance(ts, int):
            ts = event.timestamp = datetime_ms(ts)
        if ts < oldest or ts > newest:
            return False
        if not (visible_ascii(event.event_id) and name_ok(event.service)):
            return False
        if event.version is not None and not version_ok(event.version):
            return False
    return True


@dataclass(frozen=True)
class ItemKind(Generic[T]):
    """What differs between facts and events: the struct, its names and its fast path."""

    struct: type[T]
    noun: str
    plural: str
    finish: Callable[[list[T], Limits], bool]
    fields: tuple[msgspec.structs.FieldInfo, ...]


FACTS: Final = ItemKind(
    RequestFact, "fact", "facts", _finish_facts, msgspec.structs.fields(RequestFact)
)
EVENTS: Final = ItemKind(
    ServiceEvent, "event", "events", _finish_events, msgspec.structs.fields(ServiceEvent)
)


def check_count(kind: ItemKind[Any], count: int, limits: Limits) -> None:
    """Raise when a batch holds more items than allowed."""
    if count > limits.max_batch_items:
        raise PayloadTooLarge(
            f"{count} {kind.plural} in one request; at most {limits.max_batch_items} are allowed",
            code="too_many_items",
        )


def _type_message(field: str, value: object) -> str:
    if field == "timestamp" and isinstance(value, str):
        try:
            msgspec.convert(value, datetime)
        except msgspec.ValidationError:
            pass
        else:  # a valid RFC 3339 string that only lacks its offset
            return NO_OFFSET_MESSAGE
    return FIELD_MESSAGES[field]


def check_fields(kind: ItemKind[T], raw: dict[str, Any], limits: Limits) -> tuple[T | None, Errors]:
    """The reference validation: every field of one raw item on its own, in order.

    Returns the item, or None and every (field, message) that is wrong with it.
    """
    values: dict[str, Any] = {}
    errors: Errors = []
    for field in kind.fields:
        name = field.name
        if name not in raw:
            if field.required:
                errors.append((name, f"{name} is required"))
            continue
        value = raw[name]
        try:
            typed = msgspec.convert(value, field.type)
        except msgspec.ValidationError:
            errors.append((name, _type_message(name, value)))
            continue
        check = _CHECKS.get(name)
        if check is not None:
            try:
                typed = check(typed, limits)
            except _Invalid as e:
                errors.append((name, str(e)))
                continue
        values[name] = typed
    if errors:
        return None, errors
    return kind.struct(**values), []


def _item_errors(kind: ItemKind[T], raw: object, limits: Limits) -> tuple[T | None, Errors]:
    if not isinstance(raw, dict):
        return None, [(None, f"each {kind.noun} must be a JSON object")]
    # Most items of a rejected batch are fine: try the fast path on this one
    # item first (it accepts only what check_fields accepts; a test pins that).
    try:
        item = msgspec.convert(raw, kind.struct)
    except msgspec.ValidationError:
        pass
    else:
        if kind.finish([item], limits):
            return item, []
    return check_fields(kind, raw, limits)


def _sort_items(
    kind: ItemKind[T], raw_items: Sequence[object], limits: Limits
) -> tuple[list[T], list[tuple[int, Errors]]]:
    """Each raw item on its own: the valid items, and (index, errors) of the others."""
    items: list[T] = []
    rejected: list[tuple[int, Errors]] = []
    for index, raw in enumerate(raw_items):
        item, errors = _item_errors(kind, raw, limits)
        if item is not None:
            items.append(item)
        else:
            rejected.append((index, errors))
    return items, rejected


def validate_items(kind: ItemKind[T], raw_items: Sequence[object], limits: Limits) -> list[T]:
    """Slow path: validate raw decoded items one field at a time.

    Raises one :class:`InvalidFacts` listing up to ``MAX_ITEM_ERRORS`` problems
    (every invalid field of every invalid item, in order) when any item is
    invalid; the whole batch is rejected.
    """
    items, rejected = _sort_items(kind, raw_items, limits)
    if not rejected:
        return items
    problems = [
        ItemError(index, field, message) for index, errors in rejected for field, message in errors
    ][:MAX_ITEM_ERRORS]
    first = problems[0]
    verb = "is" if len(rejected) == 1 else "are"
    raise InvalidFacts(
        f"{len(rejected)} of {len(raw_items)} {kind.plural} {verb} invalid; the batch was "
        f"rejected ({kind.noun} {first.index}: {first.message})",
        field=first.field,
        items=problems,
    )


_FACT_LIST: Final = list[RequestFact]


def partition_facts(
    raw_facts: Sequence[dict[str, Any]], limits: Limits
) -> tuple[list[RequestFact], list[tuple[int, Errors]]]:
    """Keep the valid facts of a batch and say why each other one is not.

    For intakes that may accept part of a batch (OTLP's partial success), with
    the same rules as :func:`validate_items`: raw facts are dicts as JSON
    objects decode to. Returns the valid facts in order, and (index into
    ``raw_facts``, every (field, message)) for each invalid one. The fast path
    (one C-level convert and :func:`_finish_facts`) answers a valid batch.
    """
    try:
        facts = msgspec.convert(raw_facts, _FACT_LIST)
    except msgspec.ValidationError:
        pass
    else:
        if _finish_facts(facts, limits):
            return facts, []
    return _sort_items(FACTS, raw_facts, limits)
