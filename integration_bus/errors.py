"""The one exception tree of integration-bus.

Errors are classified by **what the runtime should do** with them::

    BusError                      root; carries context (route, step, envelope id, file:line, field)
    ├── ConfigError               fail at start-up; names file:line:col, field and a hint
    ├── RequestError              an operator's request refused; nothing was changed
    ├── TransientError            retry with backoff (timeouts, 5xx, connection loss)
    │   ├── CircuitOpen           a target is known to be down: hold the message, pause the route
    │   ├── SinkDeadlineExceeded  a sink call outlived its route's deadline (in doubt: retried)
    │   ├── StoreUnavailable      the SQL store cannot be reached: the worker pauses consuming
    │   ├── BrokerUnavailable     the broker connection is down or was lost mid-operation
    │   ├── PublishNacked         the broker refused to take responsibility for a message
    │   └── ClaimBusy             another copy holds the ledger claim of the key right now
    └── PermanentError            dead-letter now (schema violation, mapping error, business fault)
        ├── CrashedWorker         the worker process died handling it crash_limit times
        ├── UnroutableError       a mandatory publish matched no queue
        ├── UnpublishableError    an envelope that cannot travel (too deep to encode, too big)
        ├── EnvelopeError         bytes that are not a valid envelope
        └── MappingError          a pipeline step failed on this input
            └── CheckFailed       a ``check`` step: the input breaks a business rule

Every ``BusError`` subclass, here or elsewhere (``operators.AccessDenied``,
``deadletters.query.AmbiguousId``, ``deadletters.console.EditRefused`` are ``RequestError``s),
derives from exactly one of the four classes; ``integration_bus.fate`` says what each means for
a message.

Third-party exceptions are translated into this tree at exactly one boundary (the transport, the
store, a connector's client) with ``raise X(...) from exc`` so the cause is kept.
"""

from __future__ import annotations

from typing import Any

from integration_bus.suggest import did_you_mean

__all__ = [
    "BrokerUnavailable",
    "BusError",
    "CheckFailed",
    "CircuitOpen",
    "ClaimBusy",
    "ConfigError",
    "CrashedWorker",
    "EnvelopeError",
    "MappingError",
    "PermanentError",
    "PublishNacked",
    "RequestError",
    "SinkDeadlineExceeded",
    "StoreUnavailable",
    "TransientError",
    "UnpublishableError",
    "UnroutableError",
    "did_you_mean",
]

# Order in which context is printed; anything else follows alphabetically.
_CONTEXT_ORDER = ("route", "step", "sink", "envelope_id", "field")


class BusError(Exception):
    """Root of every error the bus raises on purpose.

    ``message`` is the human sentence; ``context`` holds the facts that locate the problem
    (route, step, envelope_id, file, line, column, field, hint, ...). ``str()`` renders both.
    """

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = {k: v for k, v in context.items() if v is not None}

    def with_context(self, **context: Any) -> BusError:
        """Add context that was not known where the error was raised (keeps existing keys)."""
        for key, value in context.items():
            if value is not None:
                self.context.setdefault(key, value)
        return self

    @property
    def error_type(self) -> str:
        return type(self).__name__

    def __str__(self) -> str:
        ctx = dict(self.context)
        hint = ctx.pop("hint", None)
        location = _location(ctx)
        parts = [f"{location}: " if location else "", self.message]
        extra = [f"{k}={ctx.pop(k)}" for k in _CONTEXT_ORDER if k in ctx]
        extra += [f"{k}={v}" for k, v in sorted(ctx.items())]
        if extra:
            parts.append(f" ({', '.join(extra)})")
        if hint:
            parts.append(f"\n  hint: {hint}")
        return "".join(parts)


def _location(ctx: dict[str, Any]) -> str:
    file = ctx.pop("file", None)
    line = ctx.pop("line", None)
    column = ctx.pop("column", None)
    if file is None:
        return ""
    out = str(file)
    if line is not None:
        out += f":{line}"
        if column is not None:
            out += f":{column}"
    return out


class ConfigError(BusError):
    """The configuration is wrong: raised at load or start-up, never at message time.

    Rendered as ``file:line:col: field: problem`` plus a hint when one is known.
    """

    def __str__(self) -> str:
        ctx = dict(self.context)
        hint = ctx.pop("hint", None)
        field = ctx.pop("field", None)
        location = _location(ctx)
        head = f"{location}: " if location else ""
        if field:
            head += f"{field}: "
        text = head + self.message
        rest = [f"{k}={v}" for k, v in sorted(ctx.items())]
        if rest:
            text += f" ({', '.join(rest)})"
        if hint:
            text += f"\n  hint: {hint}"
        return text


class RequestError(BusError):
    """An operator's request that cannot be done as asked (a role without the right, an id
    prefix that fits several dead letters, an edit that breaks the route's schema). Nothing was
    changed; the CLI and the console report the message to the operator. Never a message's error:
    met at message time it is retried like a transient one (``integration_bus.fate``)."""


class TransientError(BusError):
    """Worth retrying later: the same message may well succeed."""


class CircuitOpen(TransientError):
    """A sink's circuit breaker is open: its target is known to be down.

    The worker does not count an attempt: it hands the message back to wait (``retry_after_ms``
    in the context: until the breaker lets a probe through) and stops consuming the route for
    that long, so messages wait in their queue instead of burning attempts or delivery counts.
    """


class SinkDeadlineExceeded(TransientError):
    """A sink call took longer than its route's ``deadline``: the worker stopped waiting.

    The call may still complete (its outcome is in doubt): the retry claims the same
    idempotency key, so the ledger or the sink's lookup keeps the effect single.
    """


class StoreUnavailable(TransientError):
    """The SQL store (journal, ledger, dead letters) cannot be reached."""


class BrokerUnavailable(TransientError):
    """The broker connection is down, or was lost before an operation completed."""


class PublishNacked(TransientError):
    """The broker nacked a publish: it did not take responsibility for the message."""


class ClaimBusy(TransientError):
    """Another copy of the message is being delivered to the sink under the same idempotency
    key right now (its ledger claim is pending): this one retries later."""


class PermanentError(BusError):
    """Retrying cannot help: the message goes to the dead-letter store at once."""


class CrashedWorker(PermanentError):
    """The worker process died (SIGKILL, segfault, OOM) each time it handled this message,
    ``crash_limit`` times: the bus dead-letters it with reason ``crashed_worker``."""


class UnroutableError(PermanentError):
    """A mandatory publish matched no queue: no route takes this message type."""


class UnpublishableError(PermanentError):
    """An envelope that cannot travel on the bus: its payload cannot be encoded (nested deeper
    than the encoder goes) or it is bigger than the largest message (``broker.max_message``).
    It is dead-lettered at its source, alone: the others published with it are not held up."""


class EnvelopeError(PermanentError):
    """Bytes or a mapping that do not form a valid envelope."""


class MappingError(PermanentError):
    """A pipeline step could not turn this input into output (context names step and field)."""


class CheckFailed(MappingError):
    """A mapping's ``check`` step found a business rule broken (an order whose money does not
    add up, a line without a SKU): a business dead letter whose message names the figures."""
