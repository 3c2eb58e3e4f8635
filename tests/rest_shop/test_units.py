"""Unit tests without I/O: signatures, exact parsing, types, Retry-After, pacing, config."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectors.rest_shop import make_plugin
from connectors.rest_shop.config import RestShopSinkConfig, RestShopSourceConfig
from connectors.rest_shop.fakeshop.state import SCENARIO_SKUS, ShopState
from connectors.rest_shop.payload import (
    PayloadError,
    body_identity,
    body_time,
    message_type,
    parse_exact,
)
from connectors.rest_shop.poller import PollCursor
from connectors.rest_shop.ratelimit import ShopPacer, parse_retry_after
from connectors.rest_shop.signatures import sign, verify
from integration_bus.registry import Registry
from integration_bus.settings import ConfigErrors, load_config
from integration_bus.simulator import Simulators
from tests.rest_shop.support import write_config


def test_signatures_accept_every_rotation_secret_and_compare_in_constant_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    body = b'{"id": 1}'
    old, new = b"old-secret", b"new-secret"
    compared: list[int] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert verify([new, old], body, sign(old, body))
    assert len(compared) == 2  # every secret is compared, even after a match
    assert verify([new, old], body, sign(new, body))
    assert not verify([new, old], body, sign(b"other", body))
    assert not verify([new, old], body + b" ", sign(new, body))  # one byte more: refused
    assert not verify([new], body, None) and not verify([new], body, "not base64!")


def test_exact_parsing_keeps_big_integers_and_fractions() -> None:
    data = parse_exact(b'{"id": 9007199254740993, "big": 18446744073709551616, '
                       b'"price": 14.99, "n": [1, 0.1], "neg": -9223372036854775808}')
    assert data["id"] == 9007199254740993 and isinstance(data["id"], int)
    assert data["big"] == "18446744073709551616"  # beyond 64 bits: exact decimal text
    assert data["price"] == Decimal("14.99") and data["n"] == [1, Decimal("0.1")]
    assert data["neg"] == -(2**63)
    assert parse_exact(b'{"id": 1, "p": "9.99"}') == {"id": 1, "p": "9.99"}  # fast path
    for bad in (b'{"id": 1', b"[1, 2]", b"", b'{"x": NaN}'):
        with pytest.raises(PayloadError) as caught:
            parse_exact(bad)
        assert caught.value.context["field"] == "body"
        assert bad.decode() not in caught.value.message or not bad


def test_message_types_and_event_ids() -> None:
    assert message_type("shop", "shopify", "orders/create") == "shop.shopify.order_created"
    assert message_type("shop", "shopify", "orders/updated") == "shop.shopify.order_updated"
    assert message_type("shop", "shopify", "inventory_levels/update") == \
        "shop.shopify.inventory_level_updated"
    assert message_type("shop", "woocommerce", "order.created") == \
        "shop.woocommerce.order_created"
    assert message_type("x", "woocommerce", "Action.Woo Thing!") == \
        "x.woocommerce.action_woo_thing"
    # what a signed body says it is: its id and the time it states (never a header)
    assert body_identity({"id": 5, "updated_at": "2024-03-01T10:00:00-05:00"}) == \
        "5@2024-03-01T10:00:00-05:00"
    assert body_identity({"id": 5, "date_modified_gmt": "2024-03-01T00:00:00"}) == \
        "5@2024-03-01T00:00:00"
    assert body_identity({"id": "gid-7"}) == "gid-7"
    assert body_identity({"name": "no id"}) is None
    for bad in ({"id": {"nested": 1}}, {"id": True}, {"id": "x" * 101}, {"id": ""}):
        with pytest.raises(PayloadError):
            body_identity(bad)
    # and the newest time it states, offsets kept, WooCommerce's *_gmt read as UTC
    assert body_time({"created_at": "2024-03-01T10:00:00-05:00",
                      "updated_at": "2024-03-02T00:00:00Z"}) == datetime(2024, 3, 2, tzinfo=UTC)
    assert body_time({"date_modified_gmt": "2024-03-01T00:00:00"}) == \
        datetime(2024, 3, 1, tzinfo=UTC)
    assert body_time({"updated_at": "not a time"}) is None and body_time({}) is None


def test_bodies_nested_deeper_than_the_cap_are_refused_before_anything_else() -> None:
    deep = b'{"a": ' * 300 + b"1" + b"}" * 300
    with pytest.raises(PayloadError) as caught:
        parse_exact(deep)
    assert "deeper than 64 levels" in caught.value.message
    assert parse_exact(b'{"a": ' * 63 + b"1.5" + b"}" * 63, max_depth=64)  # the cap itself
    with pytest.raises(PayloadError):
        parse_exact(b'{"a": [' * 40 + b"1" + b"]}" * 40, max_depth=64)  # lists count too


def test_every_documented_header_spelling_is_read_and_conflicts_are_refused() -> None:
    from starlette.datastructures import Headers

    from connectors.rest_shop.signatures import HeaderConflict, read_header, read_signatures

    for name in ("X-Shopify-Topic", "x-shopify-topic", "shopify-topic", "Shopify-Topic",
                 "SHOPIFY-TOPIC"):
        assert read_header(Headers({name: "orders/create"}), "shopify-topic") == "orders/create"
    both = Headers(raw=[(b"x-shopify-topic", b"orders/create"),
                        (b"shopify-topic", b"orders/create")])
    assert read_header(both, "shopify-topic") == "orders/create"  # the same value twice: fine
    clash = Headers(raw=[(b"x-shopify-topic", b"orders/create"),
                         (b"shopify-topic", b"refunds/create")])
    with pytest.raises(HeaderConflict):
        read_header(clash, "shopify-topic")
    sigs = Headers(raw=[(b"x-wc-webhook-signature", b"a"), (b"wc-webhook-signature", b"b")])
    assert sorted(read_signatures(sigs, "wc-webhook-signature")) == ["a", "b"]  # each checked


def test_retry_after_seconds_dates_and_garbage() -> None:
    now = datetime(2024, 3, 1, 12, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("120", now) == 120.0
    later = datetime(2024, 3, 1, 12, 0, 30, tzinfo=UTC)
    assert parse_retry_after(format_datetime(later, usegmt=True), now) == 30.0
    earlier = later - timedelta(hours=1)
    assert parse_retry_after(format_datetime(earlier, usegmt=True), now) == 0.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None and parse_retry_after("-5", now) is None


def test_the_pacer_holds_a_gate_and_refills_at_its_rate() -> None:
    clock = [100.0]
    pacer = ShopPacer(rate=2.0, burst=2, clock=lambda: clock[0])
    assert pacer.reserve() == 0 and pacer.reserve() == 0  # the burst
    assert pacer.reserve() == pytest.approx(0.5)  # then one token per 1/rate seconds
    clock[0] += 0.5
    pacer.hold_until(10.0)  # a 429 said: ten seconds
    assert pacer.reserve() == pytest.approx(10.0)
    pacer.give_back()
    clock[0] += 10.0
    assert pacer.reserve() == 0


def test_the_poll_cursor_skips_what_it_took_at_its_time_only() -> None:
    t = datetime(2024, 3, 1, tzinfo=UTC)
    cursor = PollCursor.load(None, "2024-03-01T00:00:00Z").advance(t, "1")
    assert not cursor.is_new(t, "1") and cursor.is_new(t, "2")
    assert cursor.is_new(t + timedelta(seconds=1), "1")
    assert not cursor.is_new(t - timedelta(seconds=1), "3")
    assert PollCursor.load(cursor.dump(), "ignored") == cursor


def _config_errors(tmp_path: Path, sources: str = "", sinks: str = "") -> str:
    registry = Registry([make_plugin()])
    config_dir = write_config(tmp_path, "", sources=sources, sinks=sinks,
                              routes="\n  r: {from: [a.b], to: [probe]}")
    (config_dir / "bus.yaml").write_text((config_dir / "bus.yaml").read_text().replace(
        "  probe: {connector: probe}", "  probe: {connector: rest_shop, action: order_status, "
        "shop: s, base_url: 'http://x', auth: {token: t}}"))
    with pytest.raises(ConfigErrors) as caught:
        load_config(config_dir, registry, {"EMPTY": ""})
    return str(caught.value)


def test_config_errors_name_file_line_and_field(tmp_path: Path) -> None:
    both = """
  s1:
    connector: rest_shop
    webhooks: {shops: {a: {platform: shopify, secrets: [x]}}}
    poll: {shop: a, platform: shopify, base_url: "http://x", auth: {token: t}}"""
    text = _config_errors(tmp_path / "a", sources=both)
    assert "bus.yaml:5" in text and "exactly one of 'webhooks' or 'poll'" in text
    empty = """
  s1:
    connector: rest_shop
    webhooks: {shops: {a: {platform: shopify, secrets: ["${EMPTY}"]}}}"""
    assert "must not be empty" in _config_errors(tmp_path / "b", sources=empty)
    typo = """
  s1:
    connector: rest_shop
    webhooks: {shops: {a: {platfrom: shopify, secrets: [x]}}}"""
    assert "did you mean 'platform'" in _config_errors(tmp_path / "c", sources=typo)
    bad_auth = """
  k:
    connector: rest_shop
    action: inventory
    shop: acme
    base_url: "http://x"
    auth: {kind: basic, username: u}"""
    assert "needs 'username' and 'password'" in _config_errors(tmp_path / "d", sinks=bad_auth)


def test_config_models_keep_secrets_out_of_their_repr() -> None:
    source = RestShopSourceConfig.model_validate(
        {"webhooks": {"shops": {"a": {"platform": "shopify", "secrets": ["s3cr3t-value"]}}}})
    sink = RestShopSinkConfig.model_validate(
        {"action": "inventory", "shop": "a", "base_url": "http://x",
         "auth": {"token": "t0ken-value"}})
    assert "s3cr3t-value" not in repr(source) and "t0ken-value" not in repr(sink)


def test_the_shop_simulator_command_runs_the_fake_shop() -> None:
    # the fake shop is found through the simulators' entry-point group, as `bus sim` finds it
    command = Simulators.from_entry_points().get("shop").command
    assert command is not None
    runner = CliRunner()
    result = runner.invoke(command, ["--port", "0", "--orders", "3",
                                                  "--duration", "0.2"],
                           env={"SHOP_API_TOKEN": "tok"})
    assert result.exit_code == 0, result.output
    assert "fake shop on http://127.0.0.1:" in result.output and "3 orders" in result.output
    # Unset, the token is the one config/bus.yaml sends by default, and the output says so
    unset = runner.invoke(command, ["--port", "0", "--orders", "0", "--duration", "0"],
                          env={"SHOP_API_TOKEN": ""})
    assert unset.exit_code == 0, unset.output
    assert "SHOP_API_TOKEN unset: 'demo-token'" in unset.output
    config = (Path(__file__).parents[2] / "config" / "bus.yaml").read_text()
    assert "${SHOP_API_TOKEN:-demo-token}" in config
    assert "${SHOP_WEBHOOK_SECRET:-demo-webhook-secret}" in config


def test_the_fake_shops_orders_are_of_skus_the_scenario_maps() -> None:
    # `bus sim shop`'s orders must pass the reference mappings (issue 14: SKU-1 dead-lettered)
    state = ShopState(token="t")
    orders = state.add_orders(5, skus=SCENARIO_SKUS)
    xref = (Path(__file__).parents[2] / "mappings" / "xref" / "sku.csv").read_text()
    known = {row.split(",")[0] for row in xref.splitlines()[1:]}
    assert {sku for o in orders for sku, _, _ in o.lines} == set(SCENARIO_SKUS) <= known
