"""The jsonl sink's lookup when several worker processes append to one file."""

from __future__ import annotations

from pathlib import Path

from connectors.jsonl import JsonlSink, JsonlSinkConfig
from integration_bus.envelope import Envelope
from integration_bus.runtime import Bus
from tests.conftest import write_config


def test_a_lookup_sees_what_another_sink_appended_since_it_last_looked(tmp_path: Path) -> None:
    # Given two sink instances on one file (two worker processes), one having looked already
    config_dir = write_config(tmp_path, """
        store: {url: sqlite:///var/bus.db}
        sinks: {out: {connector: jsonl, path: var/out.jsonl}}
        routes: {r: {from: [a.b], to: [out]}}
        """)
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        config = JsonlSinkConfig(path="var/out.jsonl")
        first, second = (JsonlSink(config, bus.context("out")) for _ in range(2))
        one, two = (Envelope.create("a.b", {"n": n}, source="t") for n in (1, 2))
        first.deliver(one)
        assert second.lookup(one) and not second.lookup(two)
        # When the other appends a key after that look
        first.deliver(two)
        # Then the next lookup finds it, and a line still being written is not taken as done
        assert second.lookup(two)
        with (tmp_path / "var" / "out.jsonl").open("ab") as handle:
            handle.write(b'{"idempotency_key": "half')
        assert not second.lookup(Envelope.create("a.b", {}, source="t", idempotency_key="half"))
        first.close()
        second.close()
