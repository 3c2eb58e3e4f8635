"""The runtime owns source acknowledgement (``integration_bus.source_batch``): a BatchSource
reads, the runtime publishes with confirms and only then acks. Shown with the ported ``jsonl``
source on the real embedded transport and store."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import orjson

from connectors.jsonl import JsonlSource
from integration_bus.connector import BatchSource, SourceBatch, run_batch_source
from integration_bus.envelope import Envelope
from integration_bus.errors import BusError, PublishNacked
from integration_bus.runtime import Bus
from integration_bus.topology import route_queue
from integration_bus.transport import EmbeddedTransport
from tests.conftest import write_config
from tests.support.probe import wait_for

CONFIG = """
    broker: {{url: "", max_message: 1024}}
    store: {{url: sqlite:///var/bus.db}}
    sources: {{in: {{connector: jsonl, path: data/in.jsonl, type: a.b, window: {window}}}}}
    sinks: {{out: {{connector: jsonl, path: var/out.jsonl}}}}
    routes: {{r: {{from: [a.b], to: [out]}}}}
    """


def _bus(tmp_path: Path, lines: list[bytes], window: int = 500) -> Bus:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "in.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    return Bus.from_config_dir(write_config(tmp_path, CONFIG.format(window=window)), environ={})


class Recorded:
    """The real source, with every outcome list its ack received kept for the test."""

    def __init__(self, source: JsonlSource) -> None:
        self.source, self.name = source, source.name
        self.acks: list[list[BusError | None]] = []

    def read(self, stop: threading.Event) -> SourceBatch | None:
        batch = self.source.read(stop)
        if batch is None:
            return None
        ack = batch.ack

        def recorded(outcomes: Sequence[BusError | None]) -> None:
            self.acks.append(list(outcomes))
            ack(outcomes)

        return SourceBatch(batch.envelopes, recorded)

    def close(self) -> None:
        self.source.close()


def test_jsonl_is_a_batch_source(tmp_path: Path) -> None:
    with _bus(tmp_path, [b'{"n": 1}']) as bus:
        source = bus.source("in")
        assert isinstance(source, BatchSource)
        batch = source.read(threading.Event())
        assert isinstance(batch, SourceBatch) and len(batch.envelopes) == 1
        # Then nothing is acknowledged before the runtime acks: read again, the same line
        again = source.read(threading.Event())
        assert again is not None and again.envelopes[0].payload == {"n": 1}
        source.close()


def test_what_the_broker_never_takes_is_dead_lettered_at_the_source(tmp_path: Path) -> None:
    # Given a file with a good line, a line no route takes, a line too big to travel (over
    # broker.max_message), a line that is not JSON and a last good line
    stray = Envelope.create("x.y", {"n": 2}, source="elsewhere").to_json()
    lines = [b'{"n": 1}', stray, orjson.dumps({"text": "x" * 2000}), b"{not json", b'{"n": 5}']
    with _bus(tmp_path, lines) as bus:
        # When the runtime runs the source to the end of the file
        source = bus.source("in")
        assert isinstance(source, JsonlSource)
        finished = threading.Event()

        def run() -> None:
            run_batch_source(source, bus.publisher(), threading.Event())
            finished.set()

        threading.Thread(target=run, daemon=True).start()
        # Then it finishes (the too-big line does not hold the cursor back forever)
        wait_for(finished.is_set, timeout=30, message="the source reached the end of its file")
        # and the good lines are queued, the three others dead-lettered with file:line
        assert bus.store.queue.depth() == 2
        letters = bus.store.dead_letters()
        assert sorted(letter["source_ref"]["line"] for letter in letters) == [2, 3, 4]
        assert {letter["error_type"] for letter in letters} == {
            "UnroutableError", "UnpublishableError", "PermanentError"}
        # and a second run starts after the last line: nothing is published or rejected twice
        again = bus.source("in")
        assert isinstance(again, JsonlSource)
        batch = again.read(threading.Event())
        assert batch is None
        source.close()
        again.close()


def test_what_the_broker_did_not_take_is_not_acknowledged(tmp_path: Path) -> None:
    # Given five lines read two at a time, and an embedded queue that holds three messages
    lines = [orjson.dumps({"n": n}) for n in range(1, 6)]
    with _bus(tmp_path, lines, window=2) as bus:
        transport = EmbeddedTransport(lambda: bus.store.queue, max_queued=3, full_wait=0.05)
        transport.declare(bus.topology)
        jsonl = bus.source("in")
        assert isinstance(jsonl, JsonlSource)
        source = Recorded(jsonl)
        cursors = bus.context("in").cursors
        path = str(tmp_path / "data" / "in.jsonl")

        def cursor_line() -> int:
            raw = cursors.get(path)
            return int(orjson.loads(raw)["line"]) if raw else 0

        stop = threading.Event()
        publisher = transport.publisher()
        thread = threading.Thread(target=run_batch_source, args=(source, publisher, stop),
                                  daemon=True)
        thread.start()
        try:
            # When the second window finds the queue full (PublishNacked)
            wait_for(lambda: cursor_line() == 2, timeout=30, message="first window acked")
            wait_for(lambda: any(isinstance(o, PublishNacked) for a in source.acks for o in a),
                     timeout=30, message="a window refused by the full queue")
            # Then its lines are not acknowledged: the cursor stays after line 2
            assert cursor_line() == 2 and bus.store.queue.depth() == 2
            # When the worker makes room, the rest goes through, each line once
            consumer = transport.consumer([route_queue("r")], prefetch=10)
            taken: list[int] = []

            def drain() -> bool:
                deliveries = consumer.fetch(10, timeout=0.1)
                taken.extend(Envelope.from_json(d.body).payload["n"] for d in deliveries)
                consumer.ack(deliveries)
                return len(taken) >= 5

            wait_for(drain, timeout=30, message="all five lines published")
            thread.join(30)
            assert not thread.is_alive(), "the source stops at the end of its file"
            assert sorted(taken) == [1, 2, 3, 4, 5] and cursor_line() == 5
            consumer.close()
        finally:
            stop.set()
            thread.join(30)
            publisher.close()
            source.close()
