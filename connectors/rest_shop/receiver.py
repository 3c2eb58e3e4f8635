"""The webhook endpoint: ``POST /webhooks/<shop>`` (FastAPI), plus ``GET /healthz``.

Contract of one request, in order:

1. the body is read up to ``max_body`` bytes (413 beyond; a body cut short by a dropped
   connection is never published);
2. a WooCommerce creation ping (``webhook_id=N``, unsigned) is answered 200, nothing published
   or stored (a log line and the ``ping`` counter);
3. the signature is verified over the raw bytes against every current secret of the shop
   (401 if none matches; nothing about the body is logged, ever);
4. the body is parsed with exact numbers; an authentic body that is not a JSON object goes to
   the dead-letter store once per delivery id and is answered 400;
5. the envelope goes to the :class:`PublishBridge`; the answer is 200 only once the broker
   confirmed it **and** it was routed (or it was a duplicate of one that was, or no route takes
   it and it is in the dead-letter store); 503 if that did not happen within ``answer_within``.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from connectors.rest_shop.bridge import PublishBridge, Submission
from connectors.rest_shop.config import WebhookConfig, WebhookShop
from connectors.rest_shop.metrics import RestShopMetrics
from connectors.rest_shop.payload import event_id_of, message_type, parse_exact
from connectors.rest_shop.signatures import PLATFORM_HEADERS, verify
from integration_bus.connector import BusError, ConnectorContext, Envelope, http_api

__all__ = ["build_app"]

_PING = re.compile(rb"^webhook_id=\d{1,20}$")
_MAX_HEADER = 200


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


class _Receiver:
    """The per-source state the endpoint needs (no globals: one per source instance)."""

    def __init__(self, config: WebhookConfig, bridge: PublishBridge,
                 context: ConnectorContext) -> None:
        self.config = config
        self.bridge = bridge
        self.context = context
        self.metrics = RestShopMetrics.of(context.metrics.registry)
        self.secrets = {name: [s.get_secret_value().encode() for s in shop.secrets]
                        for name, shop in config.shops.items()}

    def count(self, shop: str, outcome: str) -> None:
        self.metrics.webhooks.labels(self.context.instance, shop, outcome).inc()

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
        signature = request.headers.get(names.signature)
        if shop.platform == "woocommerce" and _PING.match(body) and (
                signature is None or verify(self.secrets[shop_name], body, signature)):
            # unsigned, so nothing is written anywhere but a log line and a counter
            self.count(shop_name, "ping")
            self.context.log.info("webhook.ping", shop=shop_name, signed=signature is not None)
            return _answer(200, status="ping")
        if not verify(self.secrets[shop_name], body, signature):
            self.count(shop_name, "unauthorized")
            self.context.log.info("webhook.unauthorized", shop=shop_name,
                                  delivery_id=(request.headers.get(names.delivery_id) or "")[:80],
                                  signed=signature is not None)
            return _answer(401, error="signature does not match", shop=shop_name)
        return await self._authentic(shop_name, shop, request, body)

    async def _authentic(self, shop_name: str, shop: WebhookShop, request: Request,
                         body: bytes) -> Response:
        names = PLATFORM_HEADERS[shop.platform]
        headers = request.headers
        delivery_id, topic = headers.get(names.delivery_id), headers.get(names.topic)
        header_event = headers.get(names.event_id) if names.event_id else None
        for field, value in ((names.delivery_id, delivery_id), (names.topic, topic),
                             (names.event_id, header_event)):
            if field and value is not None and (not value or len(value) > _MAX_HEADER):
                self.count(shop_name, "bad_request")
                return _answer(400, error=f"header {field} is empty or too long",
                               shop=shop_name)
        if not delivery_id or not topic:
            self.count(shop_name, "bad_request")
            missing = names.delivery_id if not delivery_id else names.topic
            return _answer(400, error=f"header {missing} is missing", shop=shop_name)
        ref: dict[str, Any] = {"shop": shop_name, "delivery_id": delivery_id, "topic": topic}
        try:
            payload = parse_exact(body)
            event_id = event_id_of(shop.platform, header_event, payload)
            envelope = Envelope.create(
                message_type(self.config.type_prefix, shop.platform, topic), payload,
                source=self.context.instance,
                idempotency_key=f"{shop_name}:{topic}:{event_id}",
                headers={"source_ref": {**ref, "event_id": event_id}})
        except BusError as exc:
            self.count(shop_name, "bad_request")
            await run_in_threadpool(self._reject_once, body, exc, ref)
            return _answer(400, error=exc.message, field=exc.context.get("field"), **ref)
        submission = Submission(envelope=envelope, raw=body, source_ref=ref, keys=(
            f"d:{shop_name}:{delivery_id}", f"e:{shop_name}:{topic}:{event_id}"))
        return await self._publish(shop_name, submission)

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
        """An authentic but unusable body: one dead letter per delivery id, not one per retry."""
        key = f"r:{ref['shop']}:{ref['delivery_id']}"
        if not self.context.seen.seen([key]):
            self.context.reject(body, error.with_context(**ref), ref)
            self.context.seen.remember([(key, None)])


def build_app(config: WebhookConfig, bridge: PublishBridge, context: ConnectorContext) -> FastAPI:
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
