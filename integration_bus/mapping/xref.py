"""Cross-reference tables: ``mappings/xref/NAME.csv`` or ``NAME.yaml``, loaded once at start.

CSV: a header row; the first column is the key, every other column a value column
(``xref('location.erp_plant')`` picks one; the first value column is the default).
YAML: a mapping ``key: value`` or ``key: {column: value, ...}``. Keys are text; a number used as a
key is looked up by its canonical text. Duplicate or empty keys are refused with file:line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from integration_bus.errors import ConfigError
from integration_bus.suggest import closest
from integration_bus.yamlsafe import MAX_FILE_BYTES, read_yaml

__all__ = ["Table", "load_tables"]


class Table:
    """One immutable table: ``column(name)`` is a read-only key -> value mapping."""

    def __init__(self, name: str, file: str, columns: dict[str, dict[str, Any]]) -> None:
        if not columns:
            raise ConfigError("an xref table needs at least one value column", file=file)
        self.name = name
        self.file = file
        self._columns = {k: MappingProxyType(v) for k, v in columns.items()}
        self._default = next(iter(columns))

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self._columns)

    def column(self, column: str | None) -> Mapping[str, Any]:
        """The values of ``column`` (the first value column when None); KeyError if unknown."""
        return self._columns[column or self._default]

    def __len__(self) -> int:
        return len(self._columns[self._default])


def load_tables(directory: Path | None) -> dict[str, Table]:
    """Every ``*.csv`` / ``*.yaml`` / ``*.yml`` table directly in ``directory`` by file stem."""
    tables: dict[str, Table] = {}
    if directory is None or not directory.is_dir():
        return tables
    for path in sorted(directory.iterdir()):
        if path.suffix not in (".csv", ".yaml", ".yml") or not path.is_file():
            continue
        if path.stem in tables:
            raise ConfigError(f"two xref tables are named {path.stem!r}", file=str(path),
                              hint=f"also defined in {tables[path.stem].file}")
        tables[path.stem] = _load_csv(path) if path.suffix == ".csv" else _load_yaml(path)
    return tables


def _load_csv(path: Path) -> Table:
    if path.stat().st_size > MAX_FILE_BYTES * 16:
        raise ConfigError("xref table is too large", file=str(path))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read xref table: {exc}", file=str(path)) from exc
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if not header or len(header) < 2:
        raise ConfigError("an xref CSV needs a header with a key column and a value column",
                          file=str(path), line=1, hint="e.g. 'shop_sku,erp_sku'")
    names = [h.strip() for h in header[1:]]
    if len(set(names)) != len(names) or not all(names):
        raise ConfigError("xref CSV column names must be unique and non-empty", file=str(path),
                          line=1)
    columns: dict[str, dict[str, Any]] = {name: {} for name in names}
    for row in rows:
        line = rows.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise ConfigError(f"row has {len(row)} cells, the header has {len(header)}",
                              file=str(path), line=line)
        key = row[0].strip()
        if not key:
            raise ConfigError("empty key", file=str(path), line=line)
        if key in columns[names[0]]:
            raise ConfigError(f"duplicate key {key!r}", file=str(path), line=line)
        for name, cell in zip(names, row[1:], strict=True):
            columns[name][key] = cell.strip()
    return Table(path.stem, str(path), columns)


def _load_yaml(path: Path) -> Table:
    data, locator = read_yaml(path)
    if not isinstance(data, dict):
        raise locator.error("an xref YAML table must be a mapping of key: value", ())
    columns: dict[str, dict[str, Any]] = {}
    shaped = any(isinstance(v, dict) for v in data.values())
    for key, value in data.items():
        if not key.strip():
            raise locator.error("empty key", (key,), key=True)
        if shaped:
            if not isinstance(value, dict):
                raise locator.error("every entry must be a mapping of column: value when one is",
                                    (key,))
            for column, cell in value.items():
                _check_cell(cell, locator, (key, column))
                columns.setdefault(column, {})[key] = cell
        else:
            _check_cell(value, locator, (key,))
            columns.setdefault("value", {})[key] = value
    if shaped:
        for column, values in columns.items():
            missing = [k for k in data if k not in values]
            if missing:
                raise locator.error(f"column {column!r} has no value for {missing[0]!r}",
                                    (missing[0],), hint=closest(column, data[missing[0]]))
    return Table(path.stem, str(path), columns or {"value": {}})


def _check_cell(value: Any, locator: Any, path: tuple[str, ...]) -> None:
    if isinstance(value, dict | list):
        raise locator.error("xref values must be text, numbers, booleans or null", path)
