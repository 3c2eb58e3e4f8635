"""The webhook endpoint: ``POST /webhooks/<shop>`` (FastAPI), plus ``GET /healthz``.

Contract of one request, in order:

1. the body is read up to ``max_body`` bytes (413 beyond; a body cut short by a dropped
   connection is never published);
2. a WooCommerce creation ping (``webhook_id=N``, unsigned) is answered 200, nothing published
   or stored (a log line and the ``ping`` counter);
3. the signature is verified over the raw bytes against every current secret of the shop
   (401 if none matches; nothing about the body is logged, ever); headers are read in every
   spelling the platform documents (``signatures``), a header with conflicting values is 400;
4. the body is parsed with exact numbers and at most ``max_depth`` levels of nesting; what it
   is comes from the signed body itself — its ``id`` and the time it states — else from the
   platform's event id, else its delivery id header. An authentic body that cannot become a
   message (not a JSON object, too deep, neither an ``id`` nor an id header) goes to the
   dead-letter store once per body and is answered 400;
5. with ``max_age`` set, a body whose own newest time is older than that is dead-lettered once
   per body (reason: stale) and answered 200 with status ``stale``: an operator can replay it;
6. the envelope waits in the source's inbox (``bridge``) until the runtime publishes it, keyed
   by the SHA-256 of the body and the topic: the same signed body posted again — with any
   delivery or event id headers — is a ``duplicate``. The answer is 200 only once the broker
   confirmed it **and** it was routed (or it was a duplicate of one that was, or it was
   dead-lettered because no route takes it or it cannot be published); 503 if that did not
   happen within ``answer_within``.

What a replayed body can and cannot do is in docs/rest-shop.md ("Replays").
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from connectors.rest_shop.bridge import RequestBatches, Submission
from connectors.rest_shop.config import WebhookConfig, WebhookShop
from connectors.rest_shop.metrics import RestShopMetrics
from connectors.rest_shop.payload import (
    PayloadError,
    body_identity,
    body_time,
    message_type,
    parse_exact,
)
from connectors.rest_shop.signatures import (
    PLATFORM_HEADERS,
    HeaderConflict,
    PlatformHeaders,
    read_header,
    read_signatures,
    verify_any,
)
from integration_bus.connector import (
    BusError,
    ConnectorContext,
    Envelope,
    PermanentError,
    http_api,
)

__all__ = ["build_app"]

_PING = re.compile(rb"^webhook_id=\d{1,20}$")
_MAX_HEADER = 200
_MAX_SIGNATURES = 4  # signature values checked per request (each costs an HMAC of the body)


class StaleWebhook(PermanentError):
    """A signed body older than the receiver's ``max_age``: a replay, or a delivery that came
    too late to be taken without a person looking at it."""


class _BadHeaders(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class _Meta:
    """What the headers say about a delivery (unsigned: used to route and to trace)."""

    topic: str
    delivery_id: str | None
    event_id: str | None


def _read_meta(names: PlatformHeaders, headers: Any) -> _Meta:
    try:
        topic = read_header(headers, names.topic)
        if topic is None and names.resource and names.event:
            resource, event = (read_header(headers, names.resource),
                               read_header(headers, names.event))
            topic = f"{resource}.{event}" if resource and event else None
        delivery_id = read_header(headers, names.delivery_id)
        event_id = read_header(headers, names.event_id)
    except HeaderConflict as exc:
        raise _BadHeaders(str(exc)) from None
    for field, value in ((names.topic, topic), (names.delivery_id, delivery_id),
                         (names.event_id, event_id)):
        if value is not None and (not value or len(value) > _MAX_HEADER):
            raise _BadHeaders(f"header {field} is empty or too long")
    if not topic:
        raise _BadHeaders(f"header {names.topic} is missing")
    return _Meta(topic, delivery_id, event_id)


class _TooLarge(Exception):
    pass


def _answer(code: int, **body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=code, media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise _TooLarge
    return bytes(chunks)


#: answers that refuse a delivery, and the source-level rejection reason they count as
_REJECTED = {"unknown_shop": "webhook_4xx", "too_large": "webhook_4xx",
             "truncated": "webhook_4xx", "bad_request": "webhook_4xx",
             "unauthorized": "webhook_4xx", "stale": "stale"}
#: at most one journal row per shop and answer this often; the rows in between are counted
_RECORD_EVERY = 60.0


class _Rejections:
    """Refused deliveries, counted at once (``bus_source_rejections_total``) and recorded in
    the journal for ``bus status`` — at most once per shop and answer per ``_RECORD_EVERY``
    seconds, a row standing for all since the last (``times``; the rest are written when the
    interval is over): a flood of forged requests must not become a flood of database writes.
    Rows are written off the event loop; a store outage loses only those rows (logged), never
    an answer."""

    def __init__(self, context: ConnectorContext) -> None:
        self._context = context
        self._pending: dict[tuple[str, str, str], int] = {}
        self._written: dict[tuple[str, str, str], float] = {}

    def note(self, shop: str, outcome: str, reason: str) -> None:
        counter = getattr(self._context.metrics, "source_rejections", None)
        if counter is not None:
            counter.labels(self._context.instance, reason).inc()
        key = (shop, outcome, reason)
        waiting = key in self._pending
        self._pending[key] = self._pending.get(key, 0) + 1
        if waiting:
            return  # a write is due already
        due = self._written.get(key, -_RECORD_EVERY) + _RECORD_EVERY - time.monotonic()
        if due <= 0:
            self._flush(key)
        else:
            asyncio.get_running_loop().call_later(due, self._flush, key)

    def _flush(self, key: tuple[str, str, str]) -> None:
        """Called on the event loop (the receiver's handlers run there)."""
        times = self._pending.pop(key, 0)
        if not times:
            return
        self._written[key] = time.monotonic()
        shop, outcome, reason = key
        detail = {"shop": shop, "answer": outcome, "times": times, "rejection": reason}
        asyncio.get_running_loop().run_in_executor(None, self._record, detail)

    def _record(self, detail: dict[str, Any]) -> None:
        try:
            self._context.record("webhook.refused", detail)
        except BusError as exc:
            self._context.log.warning("webhook.refusal_not_recorded", error=str(exc),
                                      times=detail["times"])


class _Receiver:
    """The per-source state the endpoint needs (no globals: one per source instance)."""

    def __init__(self, config: WebhookConfig, bridge: RequestBatches,
                 context: ConnectorContext) -> None:
        self.config = config
        self.bridge = bridge
        self.context = context
        self.metrics = RestShopMetrics.of(context.metrics.registry)
        self.secrets = {name: [s.get_secret_value().encode() for s in shop.secrets]
                        for name, shop in config.shops.items()}
        self.rejections = _Rejections(context)

    def count(self, shop: str, outcome: str) -> None:
        self.metrics.webhooks.labels(self.context.instance, shop, outcome).inc()
        reason = _REJECTED.get(outcome)
        if reason is not None:
            self.rejections.note(shop, outcome, reason)

    async def handle(self, shop_name: str, request: Request) -> Response:
        shop = self.config.shops.get(shop_name)
        if shop is None:
            self.count("-", "unknown_shop")
            return _answer(404, error="no such shop")
        try:
            body = await _read_body(request, self.config.max_body)
        except _TooLarge:
            self.count(shop_name, "too_large")
            return _answer(413, error=f"body larger than {self.config.max_body} bytes",
                           shop=shop_name)
        except ClientDisconnect:
            self.count(shop_name, "truncated")  # the sender never sees an answer
            return _answer(400, error="body cut short")
        names = PLATFORM_HEADERS[shop.platform]
        signatures = read_signatures(request.headers, names.signature)
        if len(signatures) > _MAX_SIGNATURES:
            self.count(shop_name, "bad_request")
            return _answer(400, error=f"more than {_MAX_SIGNATURES} signatures", shop=shop_name)
        secrets = self.secrets[shop_name]
        if shop.platform == "woocommerce" and _PING.match(body) and (
                not signatures or verify_any(secrets, body, signatures)):
            # unsigned, so nothing is written anywhere but a log line and a counter
            self.count(shop_name, "ping")
            self.context.log.info("webhook.ping", shop=shop_name, signed=bool(signatures))
            return _answer(200, status="ping")
        if not verify_any(secrets, body, signatures):
            self.count(shop_name, "unauthorized")
            delivery = request.headers.get(names.delivery_id) or \
                request.headers.get(f"x-{names.delivery_id}") or ""
            self.context.log.info("webhook.unauthorized", shop=shop_name,
                                  delivery_id=delivery[:80], signed=bool(signatures))
            return _answer(401, error="signature does not match", shop=shop_name)
        return await self._authentic(shop_name, shop, request, body)

    async def _authentic(self, shop_name: str, shop: WebhookShop, request: Request,
                         body: bytes) -> Response:
        try:
            meta = _read_meta(PLATFORM_HEADERS[shop.platform], request.headers)
        except _BadHeaders as exc:
            self.count(shop_name, "bad_request")
            return _answer(400, error=exc.message, shop=shop_name)
        digest = hashlib.sha256(body).hexdigest()
        ref: dict[str, Any] = {"shop": shop_name, "delivery_id": meta.delivery_id,
                               "topic": meta.topic, "body_sha256": digest}
        try:
            payload = parse_exact(body, max_depth=self.config.max_depth)
            identity = body_identity(payload) or self._header_identity(meta)
            ref["event_id"] = identity
            envelope = Envelope.create(
                message_type(self.config.type_prefix, shop.platform, meta.topic), payload,
                source=self.context.instance,
                idempotency_key=f"{shop_name}:{meta.topic}:{identity}#{digest[:16]}",
                headers={"source_ref": ref})
        except BusError as exc:
            self.count(shop_name, "bad_request")
            await run_in_threadpool(self._reject_once, body, exc, ref)
            return _answer(400, error=exc.message, field=exc.context.get("field"), **ref)
        stale = self._stale(payload)
        if stale is not None:
            self.count(shop_name, "stale")
            await run_in_threadpool(self._reject_once, body, stale, ref)
            return _answer(200, status="stale", **ref)
        submission = Submission(envelope=envelope, raw=body, source_ref=ref,
                                keys=(f"b:{shop_name}:{meta.topic}:{digest}",))
        return await self._publish(shop_name, submission)

    @staticmethod
    def _header_identity(meta: _Meta) -> str:
        """A body without an ``id``: the platform's event id, else its delivery id."""
        header_id = meta.event_id or meta.delivery_id
        if not header_id:
            raise PayloadError("the body has no 'id', and no event or delivery id header "
                               "names it", field="id")
        return f"h:{header_id}"

    def _stale(self, payload: dict[str, Any]) -> StaleWebhook | None:
        """With ``max_age``: a body whose own newest time is older than that."""
        max_age = self.config.max_age
        if max_age is None:
            return None
        stated = body_time(payload)
        oldest = datetime.fromtimestamp(self.context.clock(), UTC) - timedelta(
            milliseconds=max_age)
        if stated is None or stated >= oldest:
            return None
        return StaleWebhook(f"the body's own time {stated.isoformat()} is older than the "
                            f"receiver's max_age ({max_age} ms): a replay, or a delivery too "
                            "late to take without review", field="updated_at")

    async def _publish(self, shop_name: str, submission: Submission) -> Response:
        future = self.bridge.submit(submission)
        waiting = asyncio.wrap_future(future)
        done, _ = await asyncio.wait({waiting}, timeout=self.config.answer_within / 1000)
        ref = submission.source_ref
        if not done:
            future.cancel()  # not taken yet: never published; taken: its confirm still counts
            self.count(shop_name, "unavailable")
            return _answer(503, error="the broker did not confirm in time", **ref)
        error = waiting.exception()
        if error is not None:
            self.count(shop_name, "unavailable")
            self.context.log.warning("webhook.not_published", error_type=type(error).__name__,
                                     error=str(error), **ref)
            return _answer(503, error="the message could not be published", **ref)
        accepted = waiting.result()
        self.count(shop_name, accepted.status)
        return _answer(200, status=accepted.status, envelope_id=accepted.envelope_id, **ref)

    def _reject_once(self, body: bytes, error: BusError, ref: dict[str, Any]) -> None:
        """An authentic but unusable (or stale) body: one dead letter per body and topic, not
        one per retry or per replay."""
        key = f"r:{ref['shop']}:{ref['topic']}:{ref['body_sha256']}"
        if not self.context.seen.seen([key]):
            self.context.reject(body, error.with_context(**ref), ref)
            self.context.seen.remember([(key, None)])


def build_app(config: WebhookConfig, bridge: RequestBatches,
              context: ConnectorContext) -> FastAPI:
    """The receiver's ASGI app for one source instance."""
    receiver = _Receiver(config, bridge, context)
    app = http_api(config.http)

    @app.post("/webhooks/{shop}")
    async def webhook(shop: str, request: Request) -> Response:
        started = time.monotonic()
        try:
            return await receiver.handle(shop, request)
        finally:
            receiver.metrics.answer.labels(context.instance).observe(time.monotonic() - started)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _answer(200, status="ok")  # no shop names: nobody's business

    return app
