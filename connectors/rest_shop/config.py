"""The ``rest_shop`` connector's config models: the spec behind validation, ``bus lint`` and the
generated JSON Schema.

A source instance is either a webhook receiver (``webhooks:``) or an order poll (``poll:``),
never both. A sink instance performs one ``action`` against one shop. Secrets are ``SecretStr``:
pydantic never prints them, and the connector never logs them.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from integration_bus.connector import HttpLimits, HttpTimeouts, Millis

__all__ = [
    "ACTION_PATHS",
    "AuthConfig",
    "HttpTimeouts",
    "Platform",
    "PollConfig",
    "RestShopSinkConfig",
    "RestShopSourceConfig",
    "StockListConfig",
    "WebhookConfig",
    "WebhookShop",
]

Platform = Literal["shopify", "woocommerce"]
Action = Literal["inventory", "fulfilment", "order_status", "order_lines", "price",
                 "cancel_lines"]
_SHOP_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"

#: the request each sink action makes by default (the fake shop's dialect; Shopify-flavoured)
ACTION_PATHS: dict[str, tuple[str, str]] = {
    "inventory": ("POST", "/admin/api/2024-01/inventory_levels/set.json"),
    "fulfilment": ("POST", "/admin/api/2024-01/orders/{order_id}/fulfillments.json"),
    "order_status": ("PUT", "/admin/api/2024-01/orders/{order_id}.json"),
    "order_lines": ("POST", "/admin/api/2024-01/orders/{order_id}/line_statuses.json"),
    "price": ("POST", "/admin/api/2024-01/prices/set.json"),
    "cancel_lines": ("POST", "/admin/api/2024-01/orders/{order_id}/cancel_lines.json"),
}

#: the key whose JSON object a 2xx answer of each action must hold (the fake shop's dialect)
ACTION_ANSWERS: dict[str, str] = {"inventory": "inventory_level", "fulfilment": "fulfillment",
                                  "order_status": "order", "order_lines": "order",
                                  "price": "price", "cancel_lines": "refund"}


DEFAULT_MAX_RESPONSE = 32 * 1024 * 1024  # bytes of one shop answer, decoded


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthConfig(_Model):
    """How the connector authenticates to the shop API.

    ``token``: ``header: scheme token`` (Shopify: header ``X-Shopify-Access-Token``, no scheme);
    ``basic``: HTTP basic auth (WooCommerce consumer key / secret).
    """

    kind: Literal["token", "basic"] = "token"
    token: SecretStr | None = None
    header: str = "Authorization"
    scheme: str | None = Field("Bearer", description="prefix before the token; null for none")
    username: str | None = None
    password: SecretStr | None = None

    @model_validator(mode="after")
    def _complete(self) -> AuthConfig:
        if self.kind == "token" and not (self.token and self.token.get_secret_value()):
            raise ValueError("auth kind 'token' needs a non-empty 'token'")
        if self.kind == "basic" and not (self.username and self.password):
            raise ValueError("auth kind 'basic' needs 'username' and 'password'")
        return self


class StockListConfig(_Model):
    """How ``bus reconcile`` reads this shop's inventory levels (the StockReader capability):
    ``GET path`` (``Link: rel="next"`` pages followed), each level's ``sku``, ``location_id``,
    ``available`` and ``version``, translated back into the bus's SKUs and location codes.
    Tables are read only when stock is read."""

    path: str = Field("/admin/api/2024-01/inventory_levels.json", pattern=r"^/")
    skus: str | None = Field(None, description="xref table (mappings/xref/NAME.csv) from the "
                                               "bus's SKUs to the shop's (first value column), "
                                               "as the outbound mapping uses it; none: the same")
    locations: str | None = Field(None, description="xref table from the bus's location codes "
                                                    "to the shop's location ids; none: the same")
    page_size: int = Field(250, ge=1, le=250)
    max_pages: int = Field(400, ge=1, le=100_000, description="a longer list is an error "
                                                             "(never a partial comparison)")


class WebhookShop(_Model):
    """One shop sending webhooks to ``/webhooks/<shop>``."""

    platform: Platform
    secrets: list[SecretStr] = Field(
        min_length=1, max_length=2,
        description="signing secrets; two during a rotation (the new one and the old one)")

    @field_validator("secrets")
    @classmethod
    def _non_empty(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(not s.get_secret_value() for s in value):
            raise ValueError("a webhook secret must not be empty (is its ${ENV} variable set?)")
        return value


class WebhookConfig(_Model):
    """The webhook receiver: FastAPI on the bus's HTTP runner, in a thread of its own."""

    host: str = "127.0.0.1"
    port: int = Field(8088, ge=0, le=65535, description="0 = any free port (tests)")
    shops: dict[str, WebhookShop] = Field(min_length=1)
    max_body: int = Field(1_048_576, ge=1024, le=64 * 1_048_576,
                          description="largest body accepted, in bytes (else 413)")
    answer_within: Millis = Field(800, description="answer 503 if the broker has not confirmed "
                                                   "by then (keep it under a second)")
    window: int = Field(256, ge=1, le=4096,
                        description="most deliveries published in one confirm window")
    type_prefix: str = Field("shop", pattern=r"^[a-z0-9_-]+$")
    max_depth: int = Field(64, ge=8, le=200, description="deepest nesting of a body (deeper: "
                                                         "400 and a dead letter)")
    max_age: Millis | None = Field(
        None, description="refuse bodies whose own newest time (updated_at, date_modified_gmt, "
                          "created_at...) is older than this: dead-lettered once, answered 200 "
                          "'stale'. Keep it above the platform's retry span (Shopify: 4 h)")
    http: HttpLimits = Field(default_factory=HttpLimits,
                             description="read deadlines, connection limit, bounded error logs")

    @field_validator("shops")
    @classmethod
    def _names(cls, value: dict[str, WebhookShop]) -> dict[str, WebhookShop]:
        for name in value:
            if not re.match(_SHOP_NAME, name):
                raise ValueError(f"shop name {name!r}: use lower-case letters, digits, '_', '-'")
        return value


class PollConfig(_Model):
    """Orders updated since a cursor, page by page (Link headers or page numbers)."""

    shop: str = Field(pattern=_SHOP_NAME)
    platform: Platform
    base_url: str = Field(pattern=r"^https?://", description="e.g. https://acme.myshopify.com")
    auth: AuthConfig
    pagination: Literal["link", "page"] | None = Field(
        None, description="default: link for shopify, page for woocommerce")
    page_size: int = Field(50, ge=1, le=250)
    max_pages: int = Field(20, ge=1, le=1000, description="pages fetched per poll at most")
    interval: Millis = 60_000
    since: str = Field("1970-01-01T00:00:00Z",
                       description="where the first poll starts (ISO-8601, UTC)")
    timeouts: HttpTimeouts = Field(default_factory=HttpTimeouts)
    max_response: int = Field(DEFAULT_MAX_RESPONSE, ge=1024, le=1024 ** 3,
                              description="bytes of one answer (decoded) at most; a larger "
                                          "answer is refused, never read whole")
    type_prefix: str = Field("shop", pattern=r"^[a-z0-9_-]+$")
    stock: StockListConfig = Field(default_factory=StockListConfig)

    @property
    def paging(self) -> Literal["link", "page"]:
        if self.pagination is not None:
            return self.pagination
        return "link" if self.platform == "shopify" else "page"


class RestShopSourceConfig(_Model):
    """Exactly one of ``webhooks`` (receiver) or ``poll`` (order poll)."""

    webhooks: WebhookConfig | None = None
    poll: PollConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RestShopSourceConfig:
        if (self.webhooks is None) == (self.poll is None):
            raise ValueError("a rest_shop source has exactly one of 'webhooks' or 'poll'")
        return self


class RestShopSinkConfig(_Model):
    """Pushes one kind of change to a shop, rate-limited, 429- and 5xx-aware."""

    action: Action
    shop: str = Field(pattern=_SHOP_NAME)
    base_url: str = Field(pattern=r"^https?://")
    auth: AuthConfig
    path: str | None = Field(None, description="request path; default per action "
                                               "(placeholders: {order_id})")
    rate: float = Field(2.0, gt=0, le=1000, description="requests per second to this shop")
    burst: int = Field(4, ge=1, le=1000, description="token bucket size")
    max_attempts: int = Field(4, ge=1, le=20, description="HTTP attempts per delivery")
    backoff: Millis = Field(250, description="first 5xx / connection-error backoff (doubles)")
    max_retry_after: Millis = Field(60_000, description="cap on a shop's Retry-After")
    max_inline_wait: Millis = Field(
        5_000, description="waits up to this long inside a delivery; longer waits hand the "
                           "message back to the route's retry tiers")
    idempotency_header: str | None = Field(
        "Idempotency-Key", description="header carrying the idempotency key on POST; null if "
                                       "the shop has none (POST is then retried only after a "
                                       "lookup)")
    timeouts: HttpTimeouts = Field(default_factory=HttpTimeouts)
    max_response: int = Field(DEFAULT_MAX_RESPONSE, ge=1024, le=1024 ** 3,
                              description="bytes of one answer (decoded) at most; a larger "
                                          "answer is refused, never read whole")
    stock: StockListConfig = Field(default_factory=StockListConfig)
    answer: str | None = Field(
        None, min_length=1,
        description="key of the JSON object a 2xx answer must hold to count as delivered "
                    "(default per action: inventory_level, fulfillment, order); an empty or "
                    "other answer is retried. Write null for a shop that answers with no "
                    "body (204)")

    @property
    def answer_key(self) -> str | None:
        """The key a 2xx answer must hold; None when any 2xx counts (``answer: null``)."""
        if "answer" in self.model_fields_set:
            return self.answer
        return ACTION_ANSWERS[self.action]

    @property
    def method_and_path(self) -> tuple[str, str]:
        method, default = ACTION_PATHS[self.action]
        return method, self.path or default
