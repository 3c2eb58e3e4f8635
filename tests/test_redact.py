"""The redaction boundary, piece by piece: URLs, secret values, config errors, logs, metrics
labels, the store's failure records, and personal data in payloads and text."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from prometheus_client import generate_latest

from integration_bus.cli import configure_logging
from integration_bus.metrics import Metrics
from integration_bus.pii import PersonalData
from integration_bus.redact import Secrets, known, looks_secret, redact_url
from integration_bus.registry import Registry
from integration_bus.settings import ConfigErrors, load_config
from integration_bus.store import DeadLetter, JournalEntry, Settlement, Store
from tests.conftest import write_config

PASSWORD = "Pw-7f3a9c-secret"


@pytest.mark.parametrize("url", [
    f"http://erp-user:{PASSWORD}@127.0.0.1:8080/erp/soap",
    f"amqp://bus:{PASSWORD}@rabbit:5672/prod",
    f"postgresql+psycopg://bus:{PASSWORD}@db.internal:5432/bus",
    f"https://user:{PASSWORD}@erp.example.com",
    f"amqps://bus:{PASSWORD}@rabbit",
    f"http://host/api?access_token={PASSWORD}&page=2",
])
def test_url_credentials_are_masked_and_the_rest_kept(url: str) -> None:
    shown = redact_url(url)
    assert PASSWORD not in shown and "***" in shown
    assert shown.split("://")[0] == url.split("://")[0]
    assert redact_url("http://erp:8080/path?email=a@b.example") == \
        "http://erp:8080/path?email=a@b.example"  # no user-info: nothing to hide


def test_known_values_patterns_and_secret_keys() -> None:
    secrets = Secrets([PASSWORD, "abc"])  # too short to be masked by value
    text = (f"login failed for {PASSWORD}; Authorization: Bearer eyJhbGciOi.J9x; "
            "abc stays; amqp://u:p%40ss@h/v")
    shown = secrets.scrub(text)
    assert PASSWORD not in shown and "eyJhbGciOi" not in shown and "p%40ss" not in shown
    assert "abc stays" in shown
    data = secrets.scrub_data({"api_key": "k-123456", "nested": [{"password": 42}],
                               "note": f"pw={PASSWORD}", "has_password": True})
    assert data == {"api_key": "***", "nested": [{"password": "***"}], "note": "pw=***",
                    "has_password": True}
    assert looks_secret("ERP_PASSWORD", env=True) and looks_secret("STRIPE_KEY", env=True)
    assert not looks_secret("routing_key") and not looks_secret("ERP_URL", env=True)


def test_config_errors_never_echo_env_values_and_secrets_are_collected(tmp_path: Path) -> None:
    config_dir = write_config(tmp_path, """
        broker: {url: "amqp://bus:${AMQP_PASSWORD}@127.0.0.1:5672/x"}
        store: {url: "postgresql+psycopg://bus:${PG_SECRET}@127.0.0.1/bus"}
        sinks: {out: {connector: jsonl, path: var/out.jsonl}}
        routes:
          r:
            from: [a.b]
            to: [out]
            retry: {initial_delay: "${ERP_PASSWORD}"}
        """)
    environ = {"AMQP_PASSWORD": "amqp%40" + PASSWORD, "PG_SECRET": "pg-" + PASSWORD,
               "ERP_PASSWORD": PASSWORD}
    with pytest.raises(ConfigErrors) as caught:
        load_config(config_dir, Registry.from_entry_points(), environ)
    text = str(caught.value)
    assert "not a duration" in text and "${ERP_PASSWORD}" in text
    assert PASSWORD not in text
    # once loaded, every secret is known to the process (what logs hide)
    assert {"amqp%40" + PASSWORD, "pg-" + PASSWORD, PASSWORD} <= known().values
    (config_dir / "bus.yaml").write_text((config_dir / "bus.yaml").read_text().replace(
        '"${ERP_PASSWORD}"', "100ms"))
    config = load_config(config_dir, Registry.from_entry_points(), environ)
    # the URL's password as written, and as a client decodes it
    assert {"amqp%40" + PASSWORD, "amqp@" + PASSWORD, "pg-" + PASSWORD} <= config.secrets


def test_connector_secret_fields_are_collected(tmp_path: Path) -> None:
    config_dir = write_config(tmp_path, """
        sources:
          hooks:
            connector: rest_shop
            webhooks:
              port: 18080
              shops: {acme: {platform: shopify, secrets: ["${HOOK}"]}}
        sinks: {out: {connector: jsonl, path: var/out.jsonl}}
        routes: {r: {from: [a.b], to: [out]}}
        """)
    config = load_config(config_dir, Registry.from_entry_points(), {"HOOK": "hook-" + PASSWORD})
    assert "hook-" + PASSWORD in config.secrets  # a SecretStr behind a name that says nothing


def test_logs_hide_secrets_in_events_exceptions_and_stdlib_records(
        capsys: pytest.CaptureFixture[str]) -> None:
    known().add([PASSWORD])
    root = logging.getLogger()
    pytest_handlers = list(root.handlers)  # as in a fresh `bus` process: no handler yet
    for handler in pytest_handlers:
        root.removeHandler(handler)
    try:
        configure_logging("info", json_logs=False)
        log = structlog.get_logger("test")
        try:
            raise RuntimeError(f"cannot connect to amqp://bus:{PASSWORD}@rabbit/v")
        except RuntimeError:
            log.exception("broker.failed", url=f"http://u:{PASSWORD}@erp/x",
                          token="t0k3n-value", customer={"email": "jane.doe@example.com",
                                                         "phone": "+44 20 7946 0958"})
        logging.getLogger("kombu.test").warning("reconnecting to %s",
                                                f"amqp://bus:{PASSWORD}@r/v")
        logging.getLogger("httpx.test").error("failed", exc_info=RuntimeError(PASSWORD))
    finally:
        for handler in pytest_handlers:
            root.addHandler(handler)
    err = capsys.readouterr().err
    assert "broker.failed" in err and "reconnecting to amqp://bus:***@r/v" in err
    assert "RuntimeError" in err and "Traceback" in err  # the traceback is still there
    for leak in (PASSWORD, "t0k3n-value", "jane.doe@example.com", "7946 0958"):
        assert leak not in err, leak
    assert "j***@example.com" in err


def test_metrics_labels_are_scrubbed_when_scraped() -> None:
    metrics = Metrics()
    from prometheus_client import Counter

    calls = Counter("x_calls", "calls", ["endpoint"], registry=metrics.registry)
    calls.labels(f"http://erp:{PASSWORD}@127.0.0.1:9/erp").inc()
    text = generate_latest(metrics.registry).decode()
    assert 'x_calls_total{endpoint="http://erp:***@127.0.0.1:9/erp"} 1.0' in text
    assert PASSWORD not in text


def test_store_writes_failures_without_secrets_and_journal_without_personal_data(
        tmp_path: Path) -> None:
    known().add([PASSWORD])
    store = Store.open(f"sqlite:///{tmp_path / 'bus.db'}")
    now = datetime.now(UTC)
    envelope = {"id": "E1", "type": "t", "payload": {"email": "jane.doe@example.com"}}
    failure = f"POST http://u:{PASSWORD}@erp/x failed for 'jane.doe@example.com'"
    try:
        store.settle(Settlement(
            journal=[JournalEntry("E1", "dead_lettered", now, route="r",
                                  detail={"message": failure, "phone": "+1 555 0100"})],
            dead=[DeadLetter(id="D1", envelope=envelope, route="r", reason="error",
                             error_type="ErpUnavailable", message=failure, failed_at=now,
                             traceback=f"Traceback...\nErpUnavailable: {failure}",
                             attempts=[{"message": failure}])]))
        (letter,) = store.dead_letters()
        (entry,) = store.journal_for("E1")
    finally:
        store.close()
    stored = json.dumps([letter, entry], default=str)
    assert PASSWORD not in stored and "u:***@erp" in letter["message"]
    # the payload stays real (a replay must send it); the journal keeps no personal data
    assert letter["envelope"]["payload"]["email"] == "jane.doe@example.com"
    assert "jane.doe@example.com" in letter["message"]  # masked when shown, not stored
    assert "jane.doe" not in json.dumps(entry["detail"]) and "0100" in entry["detail"]["phone"]
    assert "555" not in entry["detail"]["phone"]


SHOP_ORDER = {
    "id": 820982911946154508, "email": "jon@example.com", "phone": "+1 555-555-0100",
    "created_at": "2026-11-27T08:00:00-05:00", "total_price": "199.65",
    "customer": {"id": 115310627314723954, "first_name": "Jon", "last_name": "Snow",
                 "name": "Jon Snow", "default_address": {"address1": "123 Elm St",
                                                         "country_code": "CA"}},
    "billing_address": {"name": "Jon Snow", "address1": "123 Elm St", "city": "Ottawa",
                        "zip": "K2P 1L4", "country": "Canada", "province_code": "ON",
                        "phone": "555-555-0100"},
    "line_items": [{"name": "IPod Nano - 8GB", "sku": "IPOD2008PINK", "quantity": 1,
                    "price": "199.00"}],
    "note": "ring 613-555-0142 or mail jon.snow@winterfell.example",
    "payment_details": {"credit_card_number": "•••• •••• •••• 4242"},
    "browser_ip": "203.0.113.7",
}


def test_personal_data_by_key_and_in_text() -> None:
    masked = PersonalData().payload(SHOP_ORDER)
    text = json.dumps(masked, ensure_ascii=False)
    for leak in ("jon@example.com", "555-555-0100", "Jon", "Snow", "123 Elm", "Ottawa",
                 "K2P", "613-555-0142", "jon.snow@", "203.0.113.7"):
        assert leak not in text, leak
    # what an operator needs to recognise the order stays
    assert masked["id"] == SHOP_ORDER["id"] and masked["customer"]["id"] == 115310627314723954
    assert masked["line_items"] == SHOP_ORDER["line_items"]
    assert masked["created_at"] == SHOP_ORDER["created_at"]
    assert masked["billing_address"]["country"] == "Canada"
    assert masked["email"] == "j***@example.com" and masked["phone"] == "***0100"


@pytest.mark.parametrize("text", [
    "'+44 20 7946 0958' does not match '^[0-9]+$'",
    "{'first_name': 'Jane', 'qty': 2}", '{"last_name": "Doe"}', "<Surname>Doe</Surname>",
    "call (555) 123-4567.", "card 4111 1111 1111 1111", "iban DE89 3704 0044 0532 0130 00",
])
def test_personal_data_in_free_text(text: str) -> None:
    shown = PersonalData().text(text)
    for leak in ("7946 0958", "Jane", "Doe", "123-4567", "4111 1111", "3704 0044"):
        assert leak not in shown


@pytest.mark.parametrize("text", [
    "at 2026-11-27T08:00:00.123+00:00 in route orders",
    "no entry for '9999' in xref table 'location'", "W-00042 SKU-1234-5678 qty 10 20 30",
    "ulid 01JC6Z8XYZ12345678901234AB uuid 12345678-1234-5678-1234-567812345678",
    "price 199.65 on 2026-11-27, line 123, in deliver", "ean 4006381333931 ip 10.0.0.1",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert PersonalData().text(text) == text
