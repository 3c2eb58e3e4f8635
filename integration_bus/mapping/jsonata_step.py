"""The ``jsonata`` step: an escape hatch for a rare complex reshape, with a time and depth limit.

The expression is compiled once at load (syntax errors are ConfigErrors at its line). Each run gets
a fresh frame with its own time box, so the limit counts per document. Decimals enter JSONata as
their decimal text, because JSONata computes in binary floats: do money arithmetic in the mapping
language, not here. Numbers JSONata returns come back as Decimal via their shortest repr.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from jsonata import Jsonata  # type: ignore[import-untyped]
from jsonata.jexception import JException  # type: ignore[import-untyped]
from jsonata.timebox import Timebox  # type: ignore[import-untyped]

from integration_bus.errors import ConfigError, MappingError
from integration_bus.mapping.conform import plain_json

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
            self._program = Jsonata(expression)
        except JException as exc:
            raise ConfigError(f"invalid JSONata: {exc}", file=file, line=line, column=column,
                              field="jsonata.expression",
                              hint="see the JSONata language reference for the syntax") from exc
        except (RecursionError, ValueError, TypeError, IndexError) as exc:
            raise ConfigError(f"invalid JSONata: {exc}", file=file, line=line,
                              column=column) from exc

    def __call__(self, document: Any) -> Any:
        frame = self._program.create_frame(self._program.environment)
        Timebox(frame, self.timeout_ms, self.max_depth)
        try:
            result = self._program.evaluate(plain_json(document), frame)
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
