"""The shop API client: httpx with explicit timeouts, auth, pacing, 429 and 5xx handling.

This module is the boundary where httpx exceptions become bus errors. ``ShopClient.request``
makes at most ``max_attempts`` HTTP attempts and:

- waits for the shop's token bucket and for any ``Retry-After`` gate before **every** attempt
  (no attempt goes out before the time a 429 allowed);
- on 429 reads ``Retry-After`` (delta-seconds or HTTP date), caps it at ``max_retry_after``
  (a hostile ``86400`` does not park the bus for a day) and holds the shop's gate that long;
- on 5xx, timeouts and connection errors backs off exponentially (``backoff``, doubling);
- retries a non-idempotent request (POST) only when it carries an idempotency key, or when
  ``recheck()`` says its effect did not happen;
- when the next wait would exceed ``max_inline_wait``, or attempts run out, raises
  :class:`TransientError` with ``retry_after_ms`` in its context, so the message goes back to
  the route's retry tiers instead of holding a worker.

Other statuses (2xx, 3xx, 4xx) are returned to the caller, who knows what they mean.

Every answer is streamed and read by the core's ``read_body``: at most ``max_response`` bytes
(more raises ResponseTooLarge, a PermanentError naming the limit, and reading stops there),
gzip/deflate inflated in bounded steps; malformed compression counts as an answer lost on the
way (retried like a dropped connection, naming the endpoint without credentials).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from connectors.rest_shop.config import DEFAULT_MAX_RESPONSE, AuthConfig
from connectors.rest_shop.metrics import RestShopMetrics
from connectors.rest_shop.ratelimit import ShopPacer, parse_retry_after
from integration_bus.connector import (
    Backoff,
    HttpTimeouts,
    ResponseDecodeError,
    ResponseTooLarge,
    TransientError,
    http_client,
    read_body,
)

__all__ = ["ClientPolicy", "ShopClient"]
_SAFE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class ClientPolicy:
    """Attempts and waits of one client (all durations in milliseconds)."""

    def __init__(self, *, max_attempts: int, backoff: int, max_retry_after: int,
                 max_inline_wait: int) -> None:
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self.max_inline_wait = max_inline_wait
        #: 5xx, timeouts, connection errors: ``backoff`` doubling up to ``max_retry_after``
        self.retry = Backoff(first=backoff / 1000, cap=max_retry_after / 1000)


class ShopClient:
    """Talks to one shop. Thread-confined (one per sink instance); ``close()`` is idempotent."""

    def __init__(self, *, shop: str, action: str, base_url: str, auth: AuthConfig,
                 timeouts: HttpTimeouts, pacer: ShopPacer, policy: ClientPolicy,
                 metrics: RestShopMetrics, sleep: Callable[[float], None] = time.sleep,
                 max_response: int = DEFAULT_MAX_RESPONSE) -> None:
        self.shop = shop
        self.max_response = max_response
        self._action = action
        self._pacer = pacer
        self._policy = policy
        self._metrics = metrics
        self._sleep = sleep
        self._failures = policy.retry.start()
        headers: dict[str, str] = {"Accept": "application/json"}
        basic: httpx.BasicAuth | None = None
        if auth.kind == "token" and auth.token is not None:
            token = auth.token.get_secret_value()
            headers[auth.header] = f"{auth.scheme} {token}" if auth.scheme else token
        elif auth.kind == "basic" and auth.username and auth.password is not None:
            basic = httpx.BasicAuth(auth.username, auth.password.get_secret_value())
        self._http = http_client(timeouts, base_url=base_url, headers=headers, auth=basic)

    def _count(self, outcome: str) -> None:
        self._metrics.requests.labels(self.shop, self._action, outcome).inc()

    def _wait_turn(self, where: Mapping[str, Any]) -> None:
        wait = self._pacer.reserve()
        if wait * 1000 > self._policy.max_inline_wait:
            self._pacer.give_back()
            raise TransientError(f"shop {self.shop} is rate-limited for another {wait:.1f} s",
                                 **{**where, "shop": self.shop,
                                    "retry_after_ms": math.ceil(wait * 1000)})
        if wait > 0:
            self._metrics.throttle_wait.labels(self.shop).inc(wait)
            self._sleep(wait)

    def request(self, method: str, url: str, *, json: Any = None,
                params: Mapping[str, str] | None = None, idempotency: tuple[str, str] | None = None,
                recheck: Callable[[], bool] | None = None,
                where: Mapping[str, Any] | None = None) -> httpx.Response | None:
        """Send with pacing and retries; the final non-retryable response, or None when
        ``recheck`` found the effect already done. Raises TransientError (context: shop,
        status, attempts, retry_after_ms, plus ``where`` — e.g. envelope id)."""
        where = {**(where or {}), "shop": self.shop}
        headers = {idempotency[0]: idempotency[1]} if idempotency else {}
        retry_safe = method.upper() in _SAFE_METHODS or idempotency is not None
        attempt = 0
        self._failures.reset()
        while True:
            if attempt and not retry_safe and recheck is not None and recheck():
                return None  # the earlier attempt did take effect
            self._wait_turn(where)
            attempt += 1
            try:
                problem, delay = self._attempt(method, url, json, params, headers)
            except ResponseTooLarge as exc:
                exc.with_context(attempts=attempt, **where)
                raise
            if isinstance(problem, httpx.Response):
                return problem
            if attempt >= self._policy.max_attempts or (
                    not retry_safe and recheck is None and not problem.startswith("429")):
                raise TransientError(f"shop {self.shop}: {problem} (gave up after {attempt} "
                                     f"attempt(s))", attempts=attempt,
                                     retry_after_ms=math.ceil(delay * 1000), **where)
            if delay * 1000 > self._policy.max_inline_wait:
                raise TransientError(f"shop {self.shop}: {problem}; next try in {delay:.1f} s",
                                     attempts=attempt, retry_after_ms=math.ceil(delay * 1000),
                                     **where)
            if not problem.startswith("429"):
                self._sleep(delay)  # 429: the gate makes _wait_turn wait

    def _attempt(self, method: str, url: str, json: Any, params: Mapping[str, str] | None,
                 headers: Mapping[str, str]) -> tuple[httpx.Response | str, float]:
        """One HTTP attempt: the response to hand back, or (problem, seconds to wait).
        Raises ResponseTooLarge."""
        try:
            response = self._exchange(method, url, json, params, headers)
        except httpx.TimeoutException as exc:
            self._count("connection_error")
            return f"timed out ({type(exc).__name__})", self._backoff()
        except httpx.TransportError as exc:
            self._count("connection_error")
            return f"connection failed ({type(exc).__name__})", self._backoff()
        except ResponseDecodeError as exc:
            self._count("bad_encoding")
            return exc.message, self._backoff()
        except ResponseTooLarge:
            self._count("too_large")
            raise
        status = response.status_code
        if status == 429:
            self._count("throttled")
            asked = parse_retry_after(response.headers.get("retry-after"), time.time())
            delay = min(asked if asked is not None else self._policy.backoff / 1000,
                        self._policy.max_retry_after / 1000)
            self._pacer.hold_until(delay)
            return f"429 Too Many Requests (Retry-After {asked}s, honoured {delay:.1f}s)", delay
        if status >= 500:
            self._count("server_error")
            return f"{status} {response.reason_phrase}", self._backoff()
        self._count("ok" if status < 400 else "client_error")
        self._failures.reset()
        return response, 0.0

    def _exchange(self, method: str, url: str, json: Any, params: Mapping[str, str] | None,
                  headers: Mapping[str, str]) -> httpx.Response:
        """Send, then read the answer with limits; a response whose body is already read and
        decoded (no content-encoding left to apply)."""
        request = self._http.build_request(method, url, json=json, params=params,
                                           headers=headers)
        streamed = self._http.send(request, stream=True)
        try:
            body = read_body(streamed, limit=self.max_response, shop=self.shop)
        finally:
            streamed.close()
        kept = [(k, v) for k, v in streamed.headers.multi_items()
                if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
        return httpx.Response(streamed.status_code, headers=kept, content=body,
                              request=request, extensions=streamed.extensions)

    def _backoff(self) -> float:
        return self._failures.failed()

    def close(self) -> None:
        self._http.close()
