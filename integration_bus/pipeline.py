"""The pipeline contract of a route: one envelope in, 0..n out.

A compiled mapping (see ``integration_bus.mapping``) satisfies :class:`Pipeline`; a route that
names no mapping uses :class:`IdentityPipeline`, which passes the envelope through unchanged.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from integration_bus.envelope import Envelope

__all__ = ["IdentityPipeline", "Pipeline"]


@runtime_checkable
class Pipeline(Protocol):
    """A compiled pipeline.

    ``name`` identifies it in errors and the journal; ``version`` is a content hash of its source,
    recorded with every envelope it handled. ``__call__`` returns the outputs (empty when the input
    was filtered out, several when it was split) or raises a ``PermanentError`` (usually a
    ``MappingError`` naming step and field) for input it cannot handle. Outputs that must be
    deduplicated downstream carry idempotency keys derived deterministically from the input's.
    """

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def __call__(self, envelope: Envelope) -> list[Envelope]: ...


class IdentityPipeline:
    """Passes every envelope through unchanged."""

    name = "identity"
    version = "identity"

    def __call__(self, envelope: Envelope) -> list[Envelope]:
        return [envelope]
