""":class:`LayoutProblem`: a layout check that knows where in the layout file it applies."""

from __future__ import annotations

__all__ = ["LayoutProblem"]


class LayoutProblem(ValueError):
    """A layout-level problem: ``path`` into the YAML (below the model that raised it) and an
    optional ``hint``; the loader turns it into a LayoutError at that file:line:col."""

    def __init__(self, path: tuple[str | int, ...], message: str, *,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.hint = hint
