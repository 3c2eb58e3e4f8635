"""The ``hold`` connector on its own (embedded, SQLite): due now is published at once, a future
date is held once per key and released by its source when the clock reaches it, a date that is
not one is a permanent error naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from integration_bus.connector import PermanentError
from integration_bus.envelope import Envelope
from integration_bus.runtime import Bus
from tests.conftest import write_config

CONFIG = """
store: {{url: "sqlite:///{db}"}}
sources:
  release: {{connector: hold, sink: held, interval: 1s}}
sinks:
  held: {{connector: hold, type: price.effective, due: valid_from}}
  out: {{connector: jsonl, path: out.jsonl}}
routes:
  effective: {{from: [price.effective], to: [out]}}
"""


def price(key: str, valid_from: str) -> Envelope:
    return Envelope.create("price.changed", {"sku": "TEE", "valid_from": valid_from},
                           source="test", idempotency_key=key)


def test_hold_releases_on_the_day_once(tmp_path: Path) -> None:
    now = [datetime(2026, 12, 5, 12, tzinfo=UTC).timestamp()]
    config_dir = write_config(tmp_path, CONFIG.format(db=tmp_path / "bus.db"))
    with Bus.from_config_dir(config_dir, environ={}, clock=lambda: now[0]) as bus:
        sink, source = bus.sink("held"), bus.source("release")
        # today: out at once; in ten days: held (twice sent, held once); not a date: refused
        outcomes = sink.deliver_many([  # type: ignore[attr-defined]
            price("a", "2026-12-05T00:00:00Z"), price("b", "2026-12-15"),
            price("b", "2026-12-15"), price("c", "soon")])
        assert outcomes[:3] == [None, None, None]
        assert isinstance(outcomes[3], PermanentError) and "valid_from" in str(outcomes[3])
        assert source.poll() == 0  # type: ignore[union-attr]
        now[0] += timedelta(days=10).total_seconds()
        assert source.poll() == 1  # type: ignore[union-attr]
        assert source.poll() == 0  # type: ignore[union-attr]
        staged = bus.store.outbox_waiting()
        assert staged == 1, "the released price waits in the outbox for the relay"
        sink.close()
        source.close()


@pytest.mark.parametrize("when", ["2026-12-05", "2026-12-05T11:59:59+00:00"])
def test_a_date_that_has_come_is_not_held(tmp_path: Path, when: str) -> None:
    now = [datetime(2026, 12, 5, 12, tzinfo=UTC).timestamp()]
    config_dir = write_config(tmp_path, CONFIG.format(db=tmp_path / "bus.db"))
    with Bus.from_config_dir(config_dir, environ={}, clock=lambda: now[0]) as bus:
        sink, source = bus.sink("held"), bus.source("release")
        assert sink.deliver_many([price("d", when)]) == [None]  # type: ignore[attr-defined]
        now[0] += timedelta(days=400).total_seconds()
        assert source.poll() == 0  # type: ignore[union-attr]
        sink.close()
        source.close()
