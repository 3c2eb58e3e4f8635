"""``integration_bus.source_batch`` beyond the happy path: a publisher that raises instead of
reporting outcomes (each envelope is then published alone, and one that keeps failing is
dead-lettered at its source), and the ``Inbox`` of a push source (what waits, what gave up,
what is left when the source stops)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from connectors.jsonl import JsonlSource
from integration_bus.connector import STRIKES, Inbox, Publisher, run_batch_source
from integration_bus.envelope import Envelope
from integration_bus.errors import BusError, TransientError
from integration_bus.runtime import Bus
from tests.conftest import write_config
from tests.support.probe import wait_for

CONFIG = """
    broker: {url: ""}
    store: {url: sqlite:///var/bus.db}
    sources: {in: {connector: jsonl, path: data/in.jsonl, type: a.b}}
    sinks: {out: {connector: jsonl, path: var/out.jsonl}}
    routes: {r: {from: [a.b], to: [out]}}
    """


class Choking:
    """The bus's real publisher, except that a batch holding an envelope whose payload says
    ``choke`` makes it raise ``error`` (a publisher bug, or an input it cannot handle) instead
    of reporting outcomes."""

    def __init__(self, inner: Publisher, error: type[Exception]) -> None:
        self._inner, self._error = inner, error
        self.raised = 0

    def publish_many(self, envelopes: Sequence[Envelope]) -> list[BusError | None]:
        if any(e.payload.get("choke") for e in envelopes):
            self.raised += 1
            raise self._error("the publisher choked")
        return self._inner.publish_many(envelopes)


@pytest.mark.parametrize(("error", "raised"), [(TypeError, 2), (RuntimeError, 2 * STRIKES)])
def test_an_envelope_the_publisher_chokes_on_fails_alone_and_is_dead_lettered(
        tmp_path: Path, error: type[Exception], raised: int) -> None:
    # Given five lines, the third of which makes the publisher raise
    (tmp_path / "data").mkdir()
    lines = [{"n": 1}, {"n": 2}, {"n": 3, "choke": True}, {"n": 4}, {"n": 5}]
    (tmp_path / "data" / "in.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n"
                                                         for x in lines))
    with Bus.from_config_dir(write_config(tmp_path, CONFIG), environ={}) as bus:
        source = bus.source("in")
        assert isinstance(source, JsonlSource)
        inner = bus.publisher()
        publisher = Choking(inner, error)
        finished = threading.Event()

        def run() -> None:
            run_batch_source(source, publisher, threading.Event(), max_backoff=0.5)
            finished.set()

        threading.Thread(target=run, daemon=True).start()
        try:
            # When the runtime runs the source to the end of its file
            wait_for(finished.is_set, timeout=30, message="the source reached its end")
        finally:
            inner.close()
            source.close()
        # Then the healthy lines were published, and the third is dead-lettered at the source
        # with file:line — at once for an error of the input's kind (TypeError), after
        # STRIKES failures alone otherwise; each failure cost a batch publish and one alone
        (letter,) = bus.store.dead_letters()
        assert letter["error_type"] == "UnpublishableError"
        assert letter["source_ref"]["line"] == 3
        assert f"{error.__name__}: the publisher choked" in letter["message"]
        assert publisher.raised == raised
        published = {Envelope.from_json(m.body).payload["n"]
                     for m in bus.store.queue.take(["bus.route.r"], "test", 100, 2**62)}
        assert published == {1, 2, 4, 5}


def test_the_inbox_hands_out_what_waits_and_answers_what_is_left() -> None:
    inbox: Inbox[str, int] = Inbox()
    stop = threading.Event()
    # Given three items, the second of which its sender gave up on
    first, gave_up, third = inbox.put("a"), inbox.put("b"), inbox.put("c")
    assert gave_up.cancel()
    # When the runtime takes up to ten
    taken = inbox.take(stop, limit=10, wait=1.0)
    # Then it gets the two still waited for, in order, and they are running (no longer
    # cancellable: a sender that gives up now still gets its item acknowledged if confirmed)
    assert [w.item for w in taken] == ["a", "c"]
    assert taken[0].answer is first and taken[1].answer is third
    assert not first.cancel()
    taken[0].answer.set_result(1)
    assert first.result(timeout=1) == 1
    # When nothing waits, take returns empty after its wait, or at once once stop is set
    assert inbox.take(stop, limit=10, wait=0.05) == []
    stop.set()
    assert inbox.take(stop, limit=10, wait=30.0) == []
    # When the source closes, what still waits, and what comes later, is told to try again
    waiting = inbox.put("d")
    inbox.close()
    late = inbox.put("e")
    for future in (waiting, late):
        with pytest.raises(TransientError, match="stopping"):
            future.result(timeout=1)


def test_a_take_wakes_as_soon_as_something_arrives() -> None:
    inbox: Inbox[str, int] = Inbox()
    stop = threading.Event()
    got: list[list[str]] = []
    taker = threading.Thread(target=lambda: got.append(
        [w.item for w in inbox.take(stop, limit=5, wait=30.0)]), daemon=True)
    taker.start()
    inbox.put("x")
    taker.join(10)
    assert got == [["x"]]
    wait_for(lambda: not taker.is_alive(), timeout=5, message="the take returned")
