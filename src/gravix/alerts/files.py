"""Rule files kept in git: ``<alert_rules_dir>/<tenant>.yaml``, read when they change.

A file is checked whole before anything changes (:meth:`AlertStore.apply_file`):
one with an error changes nothing, keeps what the last good file made, and
says why in the log and in ``GET /api/v1/alerts/status`` (``file_error``),
naming the field (``rules[2].window``). A bad file never stops the server.
A file that is removed takes its rules and channels with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gravix.alerts.rules import AlertStore, convert
from gravix.errors import GravixError
from gravix.schema.alerts import RuleFile
from gravix.schema.tenant import TENANT_RE

log = logging.getLogger("gravix.alerts")
MAX_FILE_BYTES = 1 << 20


@dataclass
class RuleFiles:
    """Watches ``directory`` for ``<tenant>.yaml`` (or ``.yml``) files."""

    directory: Path | None
    store: AlertStore
    seen: dict[str, tuple[float, int]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def reload(self) -> None:
        """Apply the files that changed since the last call (never raises)."""
        if self.directory is None:
            return
        found: dict[str, Path] = {}
        try:
            entries = sorted(self.directory.iterdir())
        except OSError as e:
            self.errors["*"] = f"cannot list {self.directory}: {e.strerror}"
            return
        self.errors.pop("*", None)
        for path in entries:
            if path.suffix in (".yaml", ".yml") and TENANT_RE.fullmatch(path.stem):
                found[path.stem] = path
        for tenant, path in found.items():
            try:
                st = path.stat()
            except OSError:
                continue
            stamp = (st.st_mtime, st.st_size)
            if self.seen.get(tenant) == stamp:
                continue
            self.seen[tenant] = stamp
            self._apply(tenant, path)
        for tenant in set(self.seen) - set(found):
            del self.seen[tenant]
            self.errors.pop(tenant, None)
            self._apply_parsed(tenant, RuleFile(), "removed")

    def _apply(self, tenant: str, path: Path) -> None:
        try:
            data = path.read_bytes()
            if len(data) > MAX_FILE_BYTES:
                raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
            raw: Any = yaml.safe_load(data) or {}
        except (OSError, ValueError, yaml.YAMLError) as e:
            self._fail(tenant, path, f"not valid YAML: {_yaml_problem(e)}")
            return
        try:
            parsed = convert(raw, RuleFile, "rule file")
        except GravixError as e:
            where = f" at {e.field}" if e.field else ""
            self._fail(tenant, path, f"{e.message}{where}")
            return
        self._apply_parsed(tenant, parsed, str(path))

    def _apply_parsed(self, tenant: str, parsed: RuleFile, where: str) -> None:
        try:
            counts = self.store.apply_file(tenant, parsed, where)
        except GravixError as e:
            self._fail(tenant, Path(where), e.message + (f" at {e.field}" if e.field else ""))
            return
        self.errors.pop(tenant, None)
        log.info("alert rule file applied", extra={"fields": {"tenant": tenant, **counts}})

    def _fail(self, tenant: str, path: Path, message: str) -> None:
        self.errors[tenant] = f"{path.name}: {message}"
        try:
            self.store.file_refused(tenant, str(path), self.errors[tenant])
        except GravixError as e:  # a full disk: the log says it
            log.warning("rule file state not kept: %s", e.message)
        log.error(
            "alert rule file refused; the rules from its last good version stay",
            extra={"fields": {"tenant": tenant, "file": str(path), "error": message}},
        )


def _yaml_problem(e: BaseException) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    if mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(problem)
