"""Steps and the pipeline contract: map directives, set/rename/drop, filter, split, lookup,
validate, jsonata; envelopes, keys and versions."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from integration_bus.envelope import Envelope
from integration_bus.errors import CheckFailed, ConfigError, MappingError
from integration_bus.mapping import CompiledMapping, load_mapping, load_mappings
from integration_bus.pipeline import Pipeline

from .conftest import run_payload

Make = Callable[..., CompiledMapping]
ORDER = {"id": 7, "status": "paid", "note": None,
         "lines": [{"sku": "a", "qty": 1, "price": "2.50"}, {"sku": "b", "qty": 0, "price": "1"},
                   {"sku": "c", "qty": 3, "price": "1.10"}]}


def test_map_directives(make_mapping: Make) -> None:
    mapping = make_mapping("""\
        output: {type: a.b}
        steps:
          - map:
              id: "id | string"
              version: 2
              flags: [true, "status == 'paid'"]
              note?: note
              paid:
                $when: "status == 'paid'"
                $value: "'yes'"
              refunded:
                $when: "status == 'refunded'"
                $value: "'yes'"
              skus:
                $each: lines
                $where: "qty > 0"
                $map: "sku | upper"
              lines:
                $each: lines
                $map: {n: "$index", sku: sku, order: "$.id"}
              nothing:
                $each: missing
        """)
    assert run_payload(mapping, ORDER) == [{
        "id": "7", "version": 2, "flags": [True, True], "paid": "yes", "skus": ["A", "C"],
        "lines": [{"n": 0, "sku": "a", "order": 7}, {"n": 1, "sku": "b", "order": 7},
                  {"n": 2, "sku": "c", "order": 7}],
        "nothing": []}]


def test_set_rename_drop_never_touch_the_input(make_mapping: Make) -> None:
    mapping = make_mapping("""\
        output: {type: a.b}
        steps:
          - set:
              lines[*].total: "qty * price | round(2)"
              summary.total: "sum(lines[*].total)"
              summary.count: "count(lines)"
          - rename: {"lines[*].qty": quantity, status: state}
          - drop: [note, "lines[*].price", not_there]
        """)
    before = copy.deepcopy(ORDER)
    (out,) = run_payload(mapping, ORDER)
    assert before == ORDER
    assert out == {"id": 7, "state": "paid", "summary": {"total": "5.80", "count": 3},
                   "lines": [{"sku": "a", "quantity": 1, "total": "2.50"},
                             {"sku": "b", "quantity": 0, "total": "0.00"},
                             {"sku": "c", "quantity": 3, "total": "3.30"}]}


def test_filter_and_split_with_deterministic_keys(make_mapping: Make) -> None:
    mapping = make_mapping("""\
        input: {type: order.paid}
        output: {type: stock.moved}
        steps:
          - filter: {when: "status == 'paid'"}
          - split:
              each: lines
              map: {order: "$.id", sku: sku, qty: qty, n: "$index"}
          - filter: "qty > 0"
        """)
    envelope = Envelope.create("order.paid", ORDER, source="t", idempotency_key="K1")
    outputs = mapping(envelope)
    assert [(o.idempotency_key, o.payload) for o in outputs] == [
        ("K1/0", {"order": 7, "sku": "a", "qty": 1, "n": 0}),
        ("K1/2", {"order": 7, "sku": "c", "qty": 3, "n": 2})]
    assert all(o.causation_id == envelope.id and o.type == "stock.moved" for o in outputs)
    assert mapping(Envelope.create("order.paid", {**ORDER, "status": "open"}, source="t")) == []
    with pytest.raises(MappingError, match=r"takes order\.paid, not order\.open"):
        mapping(Envelope.create("order.open", ORDER, source="t"))


def test_one_to_one_output_key_is_derived_deterministically(make_mapping: Make) -> None:
    mapping = make_mapping("output: {type: a.b}\nsteps:\n  - map: {id: id}\n")
    envelope = Envelope.create("x.y", {"id": 1}, source="t", idempotency_key="K")
    assert mapping(envelope)[0].idempotency_key == mapping(envelope)[0].idempotency_key == "K>a.b"
    assert isinstance(mapping, Pipeline)
    assert len(mapping.version) == 16


def test_lookup_tables_resolvers_defaults_and_misses(make_mapping: Make) -> None:
    tables = {"store.csv": "code,plant,tz\n0042,1042,Europe/Berlin\n",
              "status.yaml": "paid: P\nopen: O\n"}
    mapping = make_mapping("""\
        output: {type: a.b}
        steps:
          - lookup: {key: "'0042'", table: store, column: tz, into: tz}
          - lookup: {key: status, table: status, into: code}
          - lookup: {key: "'x'", table: status, into: fallback, default: "?"}
          - lookup: {key: "id", resolver: customer, into: customer}
          - map: {tz: tz, code: code, fallback: fallback, customer: customer,
                  plant: "'0042' | xref('store.plant')"}
        """, tables=tables, resolvers={"customer": lambda key: {"7": "C-7"}.get(str(key))})
    assert run_payload(mapping, ORDER) == [{"tz": "Europe/Berlin", "code": "P", "fallback": "?",
                                            "customer": "C-7", "plant": "1042"}]
    with pytest.raises(MappingError, match="found nothing for 8") as info:
        mapping.run({**ORDER, "id": 8})
    assert info.value.context["step"] == "4:lookup"


def test_validate_conforms_and_names_the_failing_field(make_mapping: Make) -> None:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
              "required": ["total", "day"],
              "properties": {"total": {"type": "string", "pattern": r"^\d+\.\d{2}$"},
                             "day": {"type": "string", "format": "date"},
                             "qty": {"type": "integer", "minimum": 1}}}
    mapping = make_mapping("""\
        output: {type: a.b}
        steps:
          - map: {total: "price * 2", day: "when | date", qty: "qty"}
          - validate: out@1
        """, schemas={"out.v1.json": json.dumps(schema)})
    assert run_payload(mapping, {"price": "1.25", "when": "2024-03-01", "qty": 2}) == [
        {"total": "2.50", "day": "2024-03-01", "qty": 2}]
    with pytest.raises(MappingError) as info:
        mapping.run({"price": "1.25", "when": "2024-03-01", "qty": 0})
    assert info.value.context["field"] == "qty"
    assert info.value.context["step"] == "2:validate"
    assert "less than the minimum" in info.value.message


def test_jsonata_step_and_its_time_limit(make_mapping: Make) -> None:
    mapping = make_mapping("""\
        output: {type: a.b}
        steps:
          - jsonata: '{"skus": lines.sku, "n": $count(lines)}'
        """)
    assert run_payload(mapping, ORDER) == [{"skus": ["a", "b", "c"], "n": 3}]
    slow = make_mapping("""\
        output: {type: a.b}
        steps:
          - jsonata:
              expression: '$sum([1..1000000].($ * $))'
              timeout_ms: 50
        """, name="slow.yaml")
    with pytest.raises(MappingError, match="longer than 50 ms"):
        slow.run({})
    with pytest.raises(ConfigError, match="invalid JSONata") as info:
        make_mapping("output: {type: a.b}\nsteps:\n  - jsonata: '{{'\n", name="bad.yaml")
    assert info.value.context["line"] == 3


def test_store_local_business_day(evaluate: Callable[..., Any]) -> None:
    # 01:30 in Berlin on 2 March belongs to the business day of 1 March when days start at 04:00.
    assert evaluate("t | business_day('Europe/Berlin', '04:00')",
                    {"t": "2024-03-02T00:30:00Z"}) == date(2024, 3, 1)
    assert evaluate("t | business_day('Europe/Berlin')", {"t": "2024-03-01T23:30:00Z"}) == \
        date(2024, 3, 2)
    assert evaluate("t | business_day(tz)", {"t": "2024-03-01T03:00:00Z",
                                             "tz": "America/New_York"}) == date(2024, 2, 29)
    assert evaluate("'20240301 2330' | parse_datetime('%Y%m%d %H%M', 'Europe/Vienna') | "
                    "to_tz('UTC') | format_datetime('%H:%M')") == "22:30"
    assert evaluate("'2024-02-28' | date | add_days(2) | format_date('%d.%m.%Y')") == "01.03.2024"
    assert evaluate("1709251200 | from_unix | format_datetime('%Y-%m-%d')") == "2024-03-01"


def test_errors_name_field_path_step_and_envelope(make_mapping: Make) -> None:
    mapping = make_mapping("""\
        output: {type: a.b}
        steps:
          - name: build
            map:
              order:
                lines:
                  $each: lines
                  $map: {price: "price | decimal"}
        """)
    envelope = Envelope.create("x.y", {"lines": [{"price": "1"}, {"price": "abc"}]}, source="t")
    with pytest.raises(MappingError) as info:
        mapping(envelope)
    context = info.value.context
    assert (context["step"], context["field"], context["path"], context["envelope_id"]) == (
        "build", "order.lines[1].price", "lines[1].price", envelope.id)
    assert (context["line"], context["column"]) == (8, 26)


def test_load_mappings_refuses_duplicate_names(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text("name: same\noutput: {type: a.b}\nsteps:\n"
                                               "  - map: {x: x}\n")
    with pytest.raises(ConfigError, match="two mappings are named 'same'"):
        load_mappings(tmp_path, None)


def test_version_changes_when_a_used_table_changes(tmp_path: Path) -> None:
    (tmp_path / "xref").mkdir()
    table = tmp_path / "xref" / "t.csv"
    table.write_text("k,v\na,b\n")
    path = tmp_path / "m.yaml"
    path.write_text("output: {type: a.b}\nsteps:\n  - map: {x: \"'a' | xref('t')\"}\n")
    first = load_mapping(path).version
    assert load_mapping(path).version == first
    table.write_text("k,v\na,c\n")
    assert load_mapping(path).version != first


def test_output_key_makes_the_idempotency_key_from_the_business_key(make_mapping: Make) -> None:
    mapping = make_mapping("""\
        output: {type: sale.recorded, key: "concat(day, '/', id)"}
        steps:
          - split:
              each: lines
              map: {id: "$.receipt ~ '-' ~ ($index + 1)", day: "$.day", sku: sku}
        """)
    receipt = {"receipt": "R7", "day": "2024-03-01", "lines": [{"sku": "a"}, {"sku": "b"}]}
    first = mapping(Envelope.create("pos.line", receipt, source="t", idempotency_key="file-1:7"))
    again = mapping(Envelope.create("pos.line", receipt, source="t", idempotency_key="file-2:3"))
    # The same business event under another input key: the same output keys
    assert [e.idempotency_key for e in first] == [e.idempotency_key for e in again] == [
        "sale.recorded:2024-03-01/R7-1", "sale.recorded:2024-03-01/R7-2"]


@pytest.mark.parametrize("value", ["null", "''", "lines"])
def test_output_key_without_a_usable_value_is_a_mapping_error(make_mapping: Make,
                                                              value: str) -> None:
    mapping = make_mapping(f"""\
        output: {{type: a.b, key: "{value}"}}
        steps:
          - set: {{lines: "[1, 2]"}}
        """)
    with pytest.raises(MappingError) as caught:
        mapping(Envelope.create("x.y", {"id": 1}, source="t"))
    assert caught.value.context["step"] == "output" and caught.value.context["field"] == "key"


def test_output_key_unknown_function_is_refused_at_load(make_mapping: Make) -> None:
    with pytest.raises(ConfigError) as caught:
        make_mapping("""\
            output: {type: a.b, key: "id | uppper"}
            steps:
              - set: {x: "1"}
            """)
    assert "did you mean 'upper'" in str(caught.value) and "output.key" in str(caught.value)


def test_output_key_reads_input_fields_with_dollar_input(make_mapping: Make) -> None:
    mapping = make_mapping("""\
        output: {type: a.b, key: "concat($input.id, '/', id)"}
        steps:
          - map: {id: "'OUT-' ~ id"}
        """)
    (out,) = mapping(Envelope.create("x.y", {"id": 7}, source="t"))
    assert out.idempotency_key == "a.b:7/OUT-7"


def test_output_key_repeated_within_one_input_is_a_mapping_error(make_mapping: Make) -> None:
    mapping = make_mapping("""\
        output: {type: a.b, key: "order_id"}
        steps:
          - split: {each: lines, map: {order_id: "$.order_id", sku: sku}}
        """)
    with pytest.raises(MappingError) as caught:
        mapping(Envelope.create("x.y", {"order_id": "O1", "lines": [{"sku": "a"}, {"sku": "b"}]},
                                source="t"))
    assert "the same key (a.b:O1)" in caught.value.message
    assert caught.value.context["field"] == "key"


def test_check_passes_the_document_on_or_fails_with_the_figures_it_read(
        make_mapping: Make) -> None:
    mapping = make_mapping("""\
        output: {type: a.b}
        steps:
          - name: adds_up
            check:
              that: "sum(lines[*].amount) - discount == total"
              message: "'the lines less the discount are not the total'"
          - name: every_line_has_a_sku
            check:
              each: lines
              that: "sku != null"
              message: "'line ' ~ ($index + 1) ~ ' has no SKU'"
          - check: "total > 0"
        """)
    order = {"lines": [{"sku": "a", "amount": "10.00"}, {"sku": "b", "amount": "5.50"}],
             "discount": "1.50", "total": "14.00"}
    assert run_payload(mapping, order) == [order]
    with pytest.raises(CheckFailed) as caught:
        run_payload(mapping, {**order, "total": "14.01"})
    error = caught.value
    assert isinstance(error, MappingError) and error.context["step"] == "adds_up"
    assert error.message == ("the lines less the discount are not the total (lines[*].amount="
                             "[10.00, 5.50], discount=1.50, total=14.01)")
    assert error.context["line"] == 5  # the rule's own line in the mapping file
    with pytest.raises(CheckFailed) as caught:
        run_payload(mapping, {**order, "lines": [*order["lines"], {"amount": "0"}]})
    assert caught.value.message == "line 3 has no SKU (sku=null)"
    assert caught.value.context["field"] == "lines[2]"
    with pytest.raises(CheckFailed) as caught:
        run_payload(mapping, {"lines": [], "discount": "0", "total": "0"})
    assert caught.value.message == "check failed: total > 0 (total=0)"


def test_a_check_that_cannot_be_evaluated_is_a_mapping_error_naming_its_expression(
        make_mapping: Make) -> None:
    mapping = make_mapping("""\
        output: {type: a.b}
        steps:
          - check: "total - discount > 0"
        """)
    with pytest.raises(MappingError) as caught:
        run_payload(mapping, {"total": "1.00"})
    assert not isinstance(caught.value, CheckFailed)
    assert caught.value.context["expr"] == "total - discount > 0"
