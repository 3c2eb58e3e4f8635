"""Unit tests without I/O: signatures, exact parsing, types, Retry-After, pacing, config."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectors.rest_shop import make_plugin, sim_plugin
from connectors.rest_shop.config import RestShopSinkConfig, RestShopSourceConfig
from connectors.rest_shop.payload import PayloadError, event_id_of, message_type, parse_exact
from connectors.rest_shop.poller import PollCursor
from connectors.rest_shop.ratelimit import ShopPacer, parse_retry_after
from connectors.rest_shop.signatures import sign, verify
from integration_bus.registry import Registry
from integration_bus.settings import ConfigErrors, load_config
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
    assert event_id_of("shopify", "evt-1", {"id": 5}) == "evt-1"
    assert event_id_of("woocommerce", None, {"id": 5, "date_modified_gmt": "2024-03-01T00:00:00"}
                       ) == "5@2024-03-01T00:00:00"
    with pytest.raises(PayloadError):
        event_id_of("woocommerce", None, {"name": "no id"})


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
    assert sim_plugin.name == "shop" and sim_plugin.simulator is not None
    runner = CliRunner()
    result = runner.invoke(sim_plugin.simulator, ["--port", "0", "--orders", "3",
                                                  "--duration", "0.2"],
                           env={"SHOP_API_TOKEN": "tok"})
    assert result.exit_code == 0, result.output
    assert "fake shop on http://127.0.0.1:" in result.output and "3 orders" in result.output
    missing = runner.invoke(sim_plugin.simulator, ["--port", "0"], env={"SHOP_API_TOKEN": ""})
    assert missing.exit_code == 2 and "SHOP_API_TOKEN" in missing.output
