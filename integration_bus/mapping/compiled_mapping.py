""":class:`CompiledMapping`: a loaded mapping file, callable as a route's ``Pipeline``.

The steps are chained once at load into nested closures, so running a document is a straight call
chain with no per-step dispatch. A split step calls the rest of the chain once per item; a filter
that says no simply does not call it. Outputs are conformed to the output schema (and validated
against it) before envelopes are made; when the last step is a ``map`` it conforms as it builds.
"""

from __future__ import annotations

import dataclasses
import decimal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from integration_bus.envelope import Envelope
from integration_bus.errors import MappingError
from integration_bus.mapping.conform import plain_json
from integration_bus.mapping.context import Ctx
from integration_bus.mapping.fn_refs import xref_key
from integration_bus.mapping.step_compiler import Step
from integration_bus.mapping.validation import LoadedSchema
from integration_bus.mapping.values import DECIMAL_CONTEXT

__all__ = ["CompiledMapping", "MappingInfo"]

Link = Callable[[Any, Ctx, str], None]


@dataclass(frozen=True, slots=True)
class MappingInfo:
    """What a mapping file declares."""

    name: str
    file: str
    version: str
    description: str | None
    input_types: tuple[str, ...]
    output_type: str
    input_schema: LoadedSchema | None
    validate_input: bool
    output_schema: LoadedSchema | None
    uses_meta: bool
    #: ``output.key``: the business key of an output payload (None: keys derive from the input)
    output_key: Callable[[Any, Ctx], Any] | None = None


class CompiledMapping:
    """A compiled mapping; satisfies :class:`integration_bus.pipeline.Pipeline`.

    Calling it with an envelope returns the output envelopes (none when filtered, several when
    split) or raises MappingError naming step, field, input path and envelope id. It holds no
    mutable state, so one instance may serve many threads.

    ``decimal_context`` says that some step or function relies on the ambient decimal context;
    documents are then mapped inside ``decimal.localcontext(DECIMAL_CONTEXT)``. Mappings using
    only the built-in functions compute with that context explicitly and skip the switch, unless
    they validate against a schema.
    """

    def __init__(self, info: MappingInfo, steps: Sequence[Step], *,
                 decimal_context: bool = True) -> None:
        self.info = info
        self.name = info.name
        self.version = info.version
        self.steps = tuple(steps)
        self._splits = any(step.items is not None for step in steps)
        self._check_input = info.input_schema.validate \
            if info.input_schema is not None and info.validate_input else None
        self._decimal_context = decimal_context or self._check_input is not None or \
            info.output_schema is not None
        self._output_schema = info.output_schema.ref if info.output_schema is not None else None
        conformed = bool(self.steps) and self.steps[-1].conformed
        self._chain = _chain(self.steps, _terminal(info.output_schema, conformed))

    def with_step_spans(self, wrap: Callable[[str, str, Callable[..., Any]], Callable[..., Any]],
                        ) -> CompiledMapping:
        """The same mapping with each step's function wrapped by ``wrap(label, kind, func)``
        (tracing: a span per step). The plain chain stays as it is, for when tracing is off."""
        steps = []
        for step in self.steps:
            def wrapped(func: Any, step: Step = step) -> Any:
                return None if func is None else wrap(step.label, step.kind, func)
            steps.append(dataclasses.replace(step, apply=wrapped(step.apply),
                                             test=wrapped(step.test), items=wrapped(step.items)))
        return CompiledMapping(self.info, steps, decimal_context=self._decimal_context)

    def __repr__(self) -> str:
        return f"<CompiledMapping {self.name} {self.version} ({self.info.file})>"

    def __call__(self, envelope: Envelope) -> list[Envelope]:
        info = self.info
        if info.input_types and envelope.type not in info.input_types:
            raise MappingError(f"mapping {self.name} takes {', '.join(info.input_types)}, "
                               f"not {envelope.type}", step="input", envelope_id=envelope.id)
        meta = _meta(envelope) if info.uses_meta else None
        try:
            if self._decimal_context:
                results = self.run(envelope.payload, meta)
            else:  # run() without its frame: this is the hot path
                ctx = Ctx(envelope.payload, meta)
                self._chain(envelope.payload, ctx, "")
                results = ctx.out
        except MappingError as exc:
            exc.with_context(envelope_id=envelope.id, mapping=self.name)
            raise
        derive, output_type, schema = envelope.derive, info.output_type, self._output_schema
        if info.output_key is not None:
            keys = [self._business_key(payload, envelope, meta) for _, payload in results]
            if len(set(keys)) != len(keys):
                repeated = sorted({k for k in keys if keys.count(k) > 1})
                raise MappingError(f"output.key gives several outputs of one input the same "
                                   f"key ({', '.join(repeated)}): the ledger would take all "
                                   "but one for duplicates", step="output", field="key",
                                   envelope_id=envelope.id, mapping=self.name,
                                   hint="make the key unique per output, e.g. add the line")
            return [derive(type=output_type, payload=payload, schema=schema,
                           idempotency_key=key)
                    for (_, payload), key in zip(results, keys, strict=True)]
        if not self._splits:
            if len(results) == 1:  # the common case, without a comprehension's frame
                return [derive(type=output_type, payload=results[0][1], schema=schema)]
            return [derive(type=output_type, payload=payload, schema=schema)
                    for _, payload in results]
        return [derive(type=output_type, payload=payload, schema=schema,
                       idempotency_key=f"{envelope.idempotency_key}/{suffix}")
                for suffix, payload in results]

    def _business_key(self, payload: Any, envelope: Envelope,
                      meta: dict[str, Any] | None) -> str:
        assert self.info.output_key is not None
        ctx = Ctx(payload, meta)
        ctx.input = envelope.payload  # $input: the mapping's input, as everywhere else
        try:
            value = self.info.output_key(payload, ctx)
        except MappingError as exc:
            exc.with_context(step="output", field="key", envelope_id=envelope.id,
                             mapping=self.name)
            raise
        if value is None or isinstance(value, dict | list) or xref_key(value) == "":
            raise MappingError("output.key gave no usable business key (empty, null or not "
                               "a single value)", step="output", field="key",
                               envelope_id=envelope.id, mapping=self.name)
        return f"{self.info.output_type}:{xref_key(value)}"

    def run(self, payload: Any, meta: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
        """Map one payload; returns ``(split suffix, output payload)`` pairs.

        The suffix is "" without a split step, else the item indexes joined by "/".
        """
        ctx = Ctx(payload, meta)
        if not self._decimal_context:
            self._chain(payload, ctx, "")
            return ctx.out
        with decimal.localcontext(DECIMAL_CONTEXT):
            if self._check_input is not None:
                try:
                    self._check_input(payload)
                except MappingError as exc:
                    exc.with_context(step="input")
                    raise
            self._chain(payload, ctx, "")
        return ctx.out


def _meta(envelope: Envelope) -> dict[str, Any]:
    return {
        "id": envelope.id, "type": envelope.type, "source": envelope.source,
        "correlation_id": envelope.correlation_id, "causation_id": envelope.causation_id,
        "idempotency_key": envelope.idempotency_key, "schema": envelope.schema,
        "headers": dict(envelope.headers), "attempt": envelope.attempt,
        "created_at": envelope.created_at.isoformat(),
    }


def _terminal(schema: LoadedSchema | None, conformed: bool) -> Link | None:
    """The end of the chain: conform (unless the last step did), validate, collect.

    None when there is nothing to do but collect: the last step then collects itself.
    """
    if schema is None:
        if conformed:
            return None

        def emit(doc: Any, ctx: Ctx, suffix: str) -> None:
            ctx.out.append((suffix, plain_json(doc)))

        return emit
    conform = None if conformed else schema.conform
    validate = schema.validate

    def emit_checked(doc: Any, ctx: Ctx, suffix: str) -> None:
        output = doc if conform is None else conform(doc)
        try:
            validate(output)
        except MappingError as exc:
            exc.with_context(step="output")
            raise
        ctx.out.append((suffix, output))

    return emit_checked


def _chain(steps: Sequence[Step], terminal: Link | None) -> Link:
    link = terminal
    for step in reversed(steps):
        link = _link(step, link)
    return link or _collect


def _collect(doc: Any, ctx: Ctx, suffix: str) -> None:
    ctx.out.append((suffix, doc))


def _link(step: Step, nxt: Link | None) -> Link:
    label = step.label
    if step.apply is not None and nxt is None:
        last = step.apply

        def run_last_apply(doc: Any, ctx: Ctx, suffix: str) -> None:
            ctx.doc = doc
            try:
                result = last(doc, ctx)
            except MappingError as exc:
                exc.with_context(step=label)
                raise
            ctx.out.append((suffix, result))

        return run_last_apply
    nxt = nxt or _collect
    if step.apply is not None:
        apply = step.apply

        def run_apply(doc: Any, ctx: Ctx, suffix: str) -> None:
            ctx.doc = doc
            try:
                result = apply(doc, ctx)
            except MappingError as exc:
                exc.with_context(step=label)
                raise
            nxt(result, ctx, suffix)

        return run_apply
    if step.test is not None:
        test = step.test

        def run_filter(doc: Any, ctx: Ctx, suffix: str) -> None:
            ctx.doc = doc
            try:
                keep = test(doc, ctx)
            except MappingError as exc:
                exc.with_context(step=label)
                raise
            if keep:
                nxt(doc, ctx, suffix)

        return run_filter
    items = step.items
    assert items is not None

    def run_split(doc: Any, ctx: Ctx, suffix: str) -> None:
        ctx.doc = doc
        try:
            parts = items(doc, ctx)
        except MappingError as exc:
            exc.with_context(step=label)
            raise
        for index, part in enumerate(parts):
            nxt(part, ctx, f"{suffix}/{index}" if suffix else str(index))

    return run_split
