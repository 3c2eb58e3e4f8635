"""The registry of every built-in function, assembled from the ``fn_*`` modules.

It lives apart from :mod:`.functions` (the registry's types), which the ``fn_*`` modules import:
assembling the registry there would make the two import each other.
"""

from __future__ import annotations

from integration_bus.mapping import fn_dates, fn_numbers, fn_refs, fn_text
from integration_bus.mapping.functions import FunctionRegistry

__all__ = ["default_registry"]


def default_registry() -> FunctionRegistry:
    """All built-in functions: text, numbers, dates, booleans, null handling, lists, xref."""
    return FunctionRegistry([*fn_text.SPECS, *fn_numbers.SPECS, *fn_dates.SPECS, *fn_refs.SPECS])
