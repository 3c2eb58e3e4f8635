"""A hostile document against the ``jsonata`` step: the time limit holds inside builtins
(backtracking regexes, quadratic loops), builtins cannot amplify small data into gigabytes, and
``$eval`` never runs an expression taken from the data."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from jsonata import Jsonata  # type: ignore[import-untyped]

from integration_bus.errors import ConfigError, MappingError
from integration_bus.mapping import CompiledMapping
from integration_bus.mapping.jsonata_limits import (
    MAX_MATCHES,
    MAX_STRING,
    Refused,
    bound_builtins,
    timed_regex,
)
from integration_bus.mapping.jsonata_step import JsonataProgram

EVIL = "a" * 36 + "!"  # (a|aa)+$ backtracks ~fib(36) steps on it: minutes unbounded


def _run(expression: str, document: Any, timeout_ms: int = 100) -> tuple[float, str]:
    program = JsonataProgram(expression, timeout_ms=timeout_ms, max_depth=200)
    started = time.perf_counter()
    with pytest.raises(MappingError) as caught:
        program(document)
    return time.perf_counter() - started, str(caught.value)


@pytest.mark.parametrize("expression", [
    "$match(s, /(a|aa)+$/)",
    "$contains(s, /(a|aa)+$/)",
    "$replace(s, /(a|aa)+$/, 'x')",
    "$split(s, /(a|aa)+$/)",
    "$replace(s, /(a|aa)+$/, function($m) { 'x' })",
])
def test_a_backtracking_regex_stops_at_the_time_limit(expression: str) -> None:
    took, message = _run(expression, {"s": EVIL})
    assert "longer than 100 ms" in message
    assert took < 2.0, f"{took:.2f} s for a 100 ms limit"  # generous: the machine is shared


@pytest.mark.parametrize(("expression", "document"), [
    ("$distinct(xs)", {"xs": list(range(200_000))}),  # a quadratic loop inside one builtin
    ("$replace(s, 'a', 'b')", {"s": "a" * 2_000_000}),  # copies the rest of s per match
], ids=["distinct", "replace-text"])
def test_a_slow_builtin_written_in_python_is_interrupted(expression: str,
                                                          document: Any) -> None:
    took, message = _run(expression, document, timeout_ms=200)
    assert "longer than 200 ms" in message
    assert took < 3.0, f"{took:.2f} s for a 200 ms limit"


@pytest.mark.parametrize(("expression", "document", "limit"), [
    ("$pad(s, w)", {"s": "x", "w": 1_000_000_000}, "$pad to 1,000,000,000"),
    ("$pad(s, w)", {"s": "x", "w": -1_000_000_000}, "$pad to -1,000,000,000"),
    ("$replace(s, 'a', r)", {"s": "a" * 100_000, "r": "b" * 100_000}, "$replace would build"),
    ("$replace(s, /a/, r)", {"s": "a" * 100_000, "r": "b" * 100_000}, "$replace would build"),
    ("$replace(s, 'a', '$0$0$0$0$0$0$0$0$0$0')", {"s": "a" * 500_000}, "$replace would build"),
    ("$join(xs, s)", {"xs": ["a"] * 1000, "s": "b" * 100_000}, "$join would build"),
    ("$split(s, '')", {"s": "a" * 2_000_000}, "$split would return"),
    ("$split(s, ',')", {"s": "," * 2_000_000}, "$split would return"),
    ("$match(s, /a/)", {"s": "a" * 500_000}, f"more than {MAX_MATCHES:,} times"),
], ids=["pad", "pad-left", "replace-text", "replace-regex", "replace-groups", "join",
        "split-chars", "split-text", "match-count"])
def test_amplifying_builtins_are_refused_before_they_build(expression: str, document: Any,
                                                           limit: str) -> None:
    # A generous time box: what is checked is that the size limit refuses it (a loaded CI
    # machine may take seconds to find 100,000 matches), not how fast.
    _took, message = _run(expression, document, timeout_ms=120_000)
    assert "JSONata refused" in message and limit in message, message


def test_eval_is_refused_at_load_with_its_line(make_mapping: Callable[..., CompiledMapping]
                                               ) -> None:
    for expression in ("$eval(code)", "$map([code], $eval)", "($e := $eval; $e(code))"):
        with pytest.raises(ConfigError, match=r"\$eval is not allowed") as caught:
            make_mapping(f"output: {{type: a.b}}\nsteps:\n  - jsonata: '{expression}'\n",
                         name="evil.yaml")
        assert caught.value.context["line"] == 3
        assert caught.value.context["file"].endswith("evil.yaml")


def test_eval_is_refused_at_run_time_however_it_is_reached() -> None:
    program = Jsonata("$eval(code)", timed_regex)  # past the load check
    bound_builtins(program)
    with pytest.raises(Refused, match="not allowed"):
        program.evaluate({"code": "$string(1)"})


def test_ordinary_expressions_still_work_in_any_thread() -> None:
    cases = {
        "$map([1, 2, 3], function($x) { $x * 2 })": [2, 4, 6],
        "$replace('abc', /(b)/, '[$1$2]')": "a[b]c",  # a missing group is dropped
        "$replace('a-b-c', '-', '$0$0')": "a--b--c",
        "$split('a1b22c', /[0-9]+/)": ["a", "b", "c"],
        "$match('ab12', /([a-z])([0-9])?/).groups": ["a", None, "b", "1"],
        "$pad('x', -3, '#')": "##x",
        "$join(['a', 'b'], '-')": "a-b",
        "$contains('Hello', /hel/i)": True,
    }
    results: dict[str, Any] = {}

    def work() -> None:
        for expression in cases:
            results[expression] = JsonataProgram(expression, timeout_ms=1000, max_depth=200)({})

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(30)
    for expression, expected in cases.items():
        value = results[expression]
        assert (value == expected if not isinstance(value, list) else
                [str(v) if v is not None else None for v in value] ==
                [str(v) if v is not None else None for v in expected]), expression
    assert MAX_STRING > 1_000_000  # room for ordinary documents


def test_the_watchdog_never_interrupts_code_after_the_evaluation() -> None:
    # Given evaluations that end right around their deadline, again and again
    program = JsonataProgram("$sum([1..20000].($ * $))", timeout_ms=15, max_depth=200)
    outcomes = {"done": 0, "timed_out": 0}
    for _ in range(60):
        try:
            program({})
            outcomes["done"] += 1
        except MappingError:
            outcomes["timed_out"] += 1
        # Then nothing is raised here, after the guarded evaluation returned
        total = 0
        for i in range(20_000):
            total += i
        assert total == 199_990_000
    assert outcomes["timed_out"] > 0  # the deadline did fire inside evaluations
