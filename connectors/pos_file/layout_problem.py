""":class:`LayoutProblem`: a layout check that knows where in the layout file it applies."""

from __future__ import annotations

from integration_bus.connector import ConfigProblem

__all__ = ["LayoutProblem"]


class LayoutProblem(ConfigProblem):
    """A layout-level problem: ``path`` into the YAML (below the model that raised it) and an
    optional ``hint``; the loader reports it as a LayoutError at that file:line:col."""
