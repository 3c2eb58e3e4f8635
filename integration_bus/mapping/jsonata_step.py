"""The ``jsonata`` step: an escape hatch for a rare complex reshape, with a time and depth limit.

The expression is compiled once at load (syntax errors, ``$eval`` and regular expressions the
engine cannot compile are ConfigErrors at its line). Each run gets a fresh frame with its own
time box, so the limit counts per document, and runs under the bounds of ``jsonata_limits``:
the time limit holds inside builtins too (a watchdog interrupts the thread; regular expressions
carry the time left as their own timeout) and builtins cannot build huge strings or lists.
Decimals enter JSONata as their decimal text, because JSONata computes in binary floats: do
money arithmetic in the mapping language, not here. Numbers JSONata returns come back as Decimal
via their shortest repr.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import regex
from jsonata import Jsonata  # type: ignore[import-untyped]
from jsonata.jexception import JException  # type: ignore[import-untyped]
from jsonata.timebox import Timebox  # type: ignore[import-untyped]

from integration_bus.errors import ConfigError, MappingError
from integration_bus.mapping.conform import plain_json
from integration_bus.mapping.jsonata_limits import (
    Interrupted,
    Refused,
    Watchdog,
    bound_builtins,
    names_eval,
    timed_regex,
)

__all__ = ["JsonataProgram"]


class JsonataProgram:
    """A compiled JSONata expression; calling it maps one document (raises MappingError)."""

    def __init__(self, expression: str, *, timeout_ms: int, max_depth: int,
                 file: str | None = None, line: int | None = None,
                 column: int | None = None) -> None:
        self.expression = expression
        self.timeout_ms = timeout_ms
        self.max_depth = max_depth
        try:
            self._program = Jsonata(expression, timed_regex)
        except JException as exc:
            raise ConfigError(f"invalid JSONata: {exc}", file=file, line=line, column=column,
                              field="jsonata.expression",
                              hint="see the JSONata language reference for the syntax") from exc
        except regex.error as exc:
            raise ConfigError(f"invalid regular expression in JSONata: {exc}", file=file,
                              line=line, column=column, field="jsonata.expression") from exc
        except (RecursionError, ValueError, TypeError, IndexError) as exc:
            raise ConfigError(f"invalid JSONata: {exc}", file=file, line=line,
                              column=column) from exc
        if names_eval(self._program):
            raise ConfigError("$eval is not allowed in a jsonata step", file=file, line=line,
                              column=column, field="jsonata.expression",
                              hint="it would run an expression taken from the data; write the "
                                   "expression itself into the step")
        bound_builtins(self._program)
        self._watchdog = Watchdog()

    def __call__(self, document: Any) -> Any:
        frame = self._program.create_frame(self._program.environment)
        Timebox(frame, self.timeout_ms, self.max_depth)
        # The library evaluates (and applies lambdas for $map, $sort, ...) through the
        # instance it keeps per thread, a copy of the first one that thread ran: make it this
        # program, whose environment holds the bounded builtins.
        Jsonata.CURRENT.jsonata = self._program
        try:
            with self._watchdog.guard(self.timeout_ms):
                result = self._program.evaluate(plain_json(document), frame)
        except Interrupted:
            raise MappingError(f"JSONata ran longer than {self.timeout_ms} ms",
                               hint="simplify the expression or raise timeout_ms") from None
        except Refused as exc:
            raise MappingError(f"JSONata refused: {exc}",
                               hint="the limits of builtins are in docs/mapping-language.md"
                               ) from None
        except JException as exc:
            code = getattr(exc, "error", "")
            if code == "D1012":
                raise MappingError(f"JSONata ran longer than {self.timeout_ms} ms",
                                   hint="simplify the expression or raise timeout_ms") from exc
            if code == "D1011":
                raise MappingError(f"JSONata nested deeper than {self.max_depth}") from exc
            raise MappingError(f"JSONata failed: {exc}") from exc
        except (RecursionError, ValueError, TypeError, LookupError, ArithmeticError) as exc:
            raise MappingError(f"JSONata failed: {type(exc).__name__}: {exc}") from exc
        return _from_jsonata(result)


def _from_jsonata(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise MappingError("JSONata returned a number that is not finite")
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {str(k): _from_jsonata(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_jsonata(v) for v in value]
    raise MappingError(f"JSONata returned a {type(value).__name__}, which is not JSON",
                       hint="a function or regex cannot be the result")
