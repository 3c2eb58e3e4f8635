"""YAML into a pydantic model with file:line errors (``load_model`` / ``parse_model``)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, RootModel, model_validator

from integration_bus.connector import ConfigError, ConfigProblem, load_model, parse_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Column(_Strict):
    name: str
    width: int = 10


class Table(_Strict):
    title: str
    columns: list[Column]
    price: Decimal | None = None

    @model_validator(mode="after")
    def _unique(self) -> Table:
        seen: set[str] = set()
        for index, column in enumerate(self.columns):
            if column.name in seen:
                raise ConfigProblem(("columns", index, "name"),
                                    f"column {column.name!r} appears twice",
                                    hint="rename one of them")
            seen.add(column.name)
        return self


def _error(text: str, **options: bool) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_model(text, "t.yaml", Table, decimals=options.get("decimals", False))
    return caught.value


def test_a_valid_file_becomes_the_model(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("title: stock\ncolumns:\n  - {name: sku}\n  - name: qty\n    width: 5\n")
    table = load_model(path, Table)
    assert table == Table(title="stock", columns=[Column(name="sku"), Column(name="qty",
                                                                              width=5)])


def test_an_unknown_key_is_placed_with_a_did_you_mean() -> None:
    error = _error("title: t\ncolumns:\n  - name: a\n    widht: 3\n")
    assert str(error).startswith("t.yaml:4:5: columns[0].widht: unknown key 'widht'")
    assert error.context["hint"] == "did you mean 'width'?"


def test_unknown_keys_are_reported_before_other_problems() -> None:
    error = _error("title: [not, text]\ncolumns: []\ntitel: t\n")
    assert error.message == "unknown key 'titel'" and error.context["line"] == 3


def test_a_missing_key_is_reported_at_its_parent() -> None:
    error = _error("title: t\ncolumns:\n  - width: 3\n")
    assert error.message == "missing required key 'name'"
    assert (error.context["line"], error.context["field"]) == (3, "columns[0]")


def test_a_wrong_value_is_placed_at_the_value_with_a_hint() -> None:
    error = _error("title: t\ncolumns:\n  - {name: a, width: wide}\n")
    assert (error.context["line"], error.context["column"]) == (3, 22)
    assert error.context["field"] == "columns[0].width"
    assert error.context["hint"] == "write a whole number"


def test_a_validator_places_its_problem_below_its_field() -> None:
    error = _error("title: t\ncolumns:\n  - name: a\n  - name: a\n")
    assert error.message == "column 'a' appears twice"
    assert (error.context["line"], error.context["field"]) == (4, "columns[1].name")
    assert error.context["hint"] == "rename one of them"


def test_unsafe_yaml_and_floats_are_refused_at_their_line() -> None:
    assert "anchors" in _error("title: &t x\ncolumns: []\n").message
    assert _error("title: t\ncolumns: []\nprice: 1.5\n").context["line"] == 3
    assert parse_model("title: t\ncolumns: []\nprice: 1.5\n", "t.yaml", Table,
                       decimals=True).price == Decimal("1.5")


def test_an_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("title: " + "x" * 2000 + "\ncolumns: []\n")
    with pytest.raises(ConfigError) as caught:
        load_model(path, Table, max_bytes=1000)
    assert "the limit is 1000" in caught.value.message


class Columns(RootModel[list[Column]]):
    """A file that is a list at the top."""


def test_a_top_level_list_model_gets_the_same_did_you_mean() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_model("- {name: a}\n- {name: b, widht: 2}\n", "cols.yaml", Columns)
    assert str(caught.value).startswith("cols.yaml:2:13: [1].widht: unknown key 'widht'")
    assert caught.value.context["hint"] == "did you mean 'width'?"
