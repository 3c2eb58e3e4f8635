"""The sourcing policy: where an order line may ship from, and what to do when no location can.

Part of the ``order_saga`` sink's config (``policy:``), so ``bus lint`` checks it with file:line:

- ``channels``: location priority per sales channel (``web: [WH-01, STORE-042, STORE-107]``);
  the first is where the availability gate promised from.
- ``stores``: which locations are stores; ``ship_from_store: false`` skips them.
- ``max_split``: at most this many locations one order ships from.
- ``back_order``: SKUs and categories (``categories``: SKU -> category) that may be back-ordered,
  with the expected lead time, and how long a back order ``wait``-s for stock before it is
  cancelled (re-sourced as soon as the projection shows stock; ``order_saga`` source).
- ``otherwise``: a short line that may not be back-ordered is ``cancel``-led or the saga ``ask``-s
  a person (a business dead letter listing the options).
- ``partial``: when a line is cancelled, ``keep`` the rest of the order or ``cancel_order``.
- ``wait``: how long the saga waits for the ERP (transient failures, timeouts) before it decides
  as for a short line (``on_timeout``: ``cancel`` or ``ask``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from integration_bus.durations import Millis

__all__ = ["BackOrderPolicy", "SourcingPolicy"]

#: what a person may choose for an order that waits for one (``bus dlq edit ID --set
#: decision=...``)
DECISIONS = ("back_order", "cancel_line", "cancel_order")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackOrderPolicy(_Model):
    skus: list[str] = Field(default_factory=list, description="SKUs that may be back-ordered")
    categories: list[str] = Field(default_factory=list,
                                  description="categories that may be back-ordered")
    category_of: dict[str, str] = Field(default_factory=dict,
                                        description="SKU -> category (for ``categories``)")
    lead_days: int = Field(14, ge=0, le=365, description="expected days until a back-ordered "
                                                         "line ships (told to the shop)")
    wait: Millis | None = Field(None, description="how long (from the order) a back-ordered "
                                                  "line waits for stock before it is "
                                                  "cancelled; default lead_days")

    def wait_seconds(self) -> float:
        return self.wait / 1000 if self.wait is not None else self.lead_days * 86_400.0

    def allows(self, sku: str) -> bool:
        return sku in self.skus or self.category_of.get(sku) in self.categories


class SourcingPolicy(_Model):
    channels: dict[str, list[str]] = Field(
        description="location priority per sales channel (first = the gate's location)")
    default_channel: str = Field("web", description="channel of an order that names none")
    stores: list[str] = Field(default_factory=list, description="locations that are stores")
    ship_from_store: bool = Field(True, description="may a store ship a web order")
    max_split: int = Field(2, ge=1, le=10, description="locations one order ships from, at most")
    back_order: BackOrderPolicy = Field(default_factory=BackOrderPolicy)
    otherwise: Literal["cancel", "ask"] = Field(
        "cancel", description="a short line that may not be back-ordered")
    partial: Literal["keep", "cancel_order"] = Field(
        "keep", description="when a line is cancelled: keep the rest, or cancel the order")
    wait: Millis = Field(120_000, description="how long to wait for the ERP before deciding")
    on_timeout: Literal["cancel", "ask"] = Field(
        "ask", description="what the ERP's silence past ``wait`` leads to")

    @model_validator(mode="after")
    def _channels_named(self) -> SourcingPolicy:
        if not self.channels or any(not locations for locations in self.channels.values()):
            raise ValueError("every channel needs at least one location")
        if self.default_channel not in self.channels:
            raise ValueError(f"default_channel {self.default_channel!r} is not one of the "
                             f"channels ({', '.join(sorted(self.channels))})")
        return self

    def locations(self, channel: str) -> list[str]:
        """The locations an order of ``channel`` may ship from, in priority order."""
        ranked = self.channels.get(channel) or self.channels[self.default_channel]
        return [loc for loc in ranked
                if self.ship_from_store or loc not in self.stores or loc == ranked[0]]
