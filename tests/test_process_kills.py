"""Guarantees under process death (DESIGN §3.1-3.3), against the real RabbitMQ."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

from integration_bus.envelope import Envelope
from integration_bus.registry import Registry
from integration_bus.runtime import Bus
from integration_bus.store import Store
from tests.conftest import write_config
from tests.support.crashing_worker import PLUGIN as CRASHER
from tests.support.probe import registry_with, wait_for

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow, pytest.mark.faults]

REPO = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """A worker in its own process, killed and restarted at will."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args, self.log = args, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_at_start = 0

    def start(self) -> None:
        self._log_at_start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=out, stderr=out,
                                         env={**os.environ, "BUS_LOG_LEVEL": "info"})
        self.starts += 1

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def ready(self) -> bool:
        """This start has connected: it logged ``worker.consuming`` after it began. (A count
        over the whole log would not do: each start logs it once per lane, so the earlier
        starts' lines already reach any count before this one has even imported Python.)"""
        with self.log.open("rb") as log:
            log.seek(self._log_at_start)
            return b"worker.consuming" in log.read()

    def stop(self) -> int:
        assert self.proc is not None
        # SIGTERM to a process still importing Python would meet the default handler: wait
        # until this start consumes, as an operator's stop would come to a running worker
        wait_for(lambda: self.ready() or self.died(), timeout=60, message="worker started")
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def sink_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines(keepends=True)
            if line.endswith(b"\n")]


def config_for(tmp_path: Path, url: str, connector: str, delivery_limit: int) -> Path:
    return write_config(tmp_path, f"""
        broker: {{url: "{url}", prefetch: 200, batch_size: 100}}
        store: {{url: sqlite:///var/bus.db}}
        sinks:
          out: {{connector: {connector}, path: var/out.jsonl}}
        routes:
          orders:
            from: [order.created]
            to: [out]
            delivery_limit: {delivery_limit}
        """)


def publish_in_background(config_dir: Path, envelopes: list[Envelope],
                          registry: Registry | None = None) -> threading.Thread:
    def body() -> None:
        with Bus.from_config_dir(config_dir, environ={}, registry=registry) as bus:
            publisher = bus.publisher()
            for start in range(0, len(envelopes), 250):
                assert publisher.publish_many(envelopes[start:start + 250]) == [None] * len(
                    envelopes[start:start + 250])
            publisher.close()
    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def test_worker_killed_five_times_loses_and_doubles_nothing(tmp_path: Path,
                                                            rabbitmq_url: str) -> None:
    # Given 5,000 messages flowing to a route whose worker runs in its own process
    config_dir = config_for(tmp_path, rabbitmq_url, "jsonl", delivery_limit=10)
    Bus.from_config_dir(config_dir, environ={}).open().close()  # declare before publishing
    envelopes = [Envelope.create("order.created", {"n": i}, source="test") for i in range(5000)]
    publisher = publish_in_background(config_dir, envelopes)
    out = tmp_path / "var" / "out.jsonl"
    worker = WorkerProcess([sys.executable, "-m", "integration_bus", "worker",
                            "--config-dir", str(config_dir)], tmp_path / "worker.log")
    try:
        worker.start()
        # When it is killed with SIGKILL five times mid-flow, restarted each time: at fixed
        # delivery counts spread over the run, each reachable (a target drawn relative to the
        # count so far could lie beyond the 5,000 messages there are, and time out)
        for goal in (500, 1300, 2100, 2900, 3700):
            wait_for(lambda g=goal: len(sink_lines(out)) >= g, timeout=60,
                     message=f"{goal} deliveries")
            worker.kill9()
            worker.start()
        publisher.join(60)
        wait_for(lambda: len({line["idempotency_key"] for line in sink_lines(out)}) >= 5000,
                 timeout=120, message="all 5000 delivered")
        assert worker.stop() == 0  # SIGTERM: finish in-flight, ack, exit 0
    finally:
        worker.cleanup()
    # Then all 5,000 were delivered, none twice, none dead-lettered
    lines = sink_lines(out)
    keys = [line["idempotency_key"] for line in lines]
    assert len(keys) == 5000 and set(keys) == {e.idempotency_key for e in envelopes}
    store = Store.open(f"sqlite:///{tmp_path / 'var' / 'bus.db'}")
    try:
        assert store.dead_letters() == []
        assert store.count_events("delivered", route="orders") == 5000
    finally:
        store.close()
    assert worker.starts == 6


def until_poison_archived(worker: WorkerProcess, store: Store, out: Path, others: int) -> None:
    """Start the worker again whenever it dies (as a supervisor would) until a dead letter is
    stored and ``others`` lines are delivered; then stop it with SIGTERM."""
    def settled() -> bool:
        if worker.died():
            worker.start()
        return len(store.dead_letters()) >= 1 and len(sink_lines(out)) >= others

    wait_for(settled, timeout=120, message="poison archived and the rest delivered")
    assert worker.stop() == 0


def test_message_that_kills_the_worker_ends_as_crashed_worker_dead_letter(
        tmp_path: Path, rabbitmq_url: str) -> None:
    # Given a poison message among 300 that kills the worker process whenever it is handled,
    # on a route with delivery_limit 3 (so crash_limit defaults to 2: the bus acts first)
    config_dir = config_for(tmp_path, rabbitmq_url, "crasher", delivery_limit=3)
    registry = registry_with(CRASHER)
    Bus.from_config_dir(config_dir, environ={}, registry=registry).open().close()
    envelopes = [Envelope.create("order.created", {"n": i, "poison": i == 100}, source="test")
                 for i in range(300)]
    poison = envelopes[100]
    publish_in_background(config_dir, envelopes, registry).join(60)
    out = tmp_path / "var" / "out.jsonl"
    store = Store.open(f"sqlite:///{tmp_path / 'var' / 'bus.db'}")
    worker = WorkerProcess([sys.executable, "-m", "tests.support.crashing_worker",
                            str(config_dir)], tmp_path / "worker.log")

    try:
        worker.start()
        # When the worker keeps dying on it and being restarted
        until_poison_archived(worker, store, out, 299)
    finally:
        worker.cleanup()
    # Then the bus itself moved it to the dead-letter table (crash markers), and only it
    (letter,) = store.dead_letters()
    store.close()
    assert letter["envelope_id"] == poison.id
    assert letter["reason"] == "crashed_worker" and letter["route"] == "orders"
    assert letter["error_type"] == "CrashedWorker"
    assert [a["attempt"] for a in letter["attempts"]] == [1, 2]
    keys = [line["idempotency_key"] for line in sink_lines(out)]
    assert len(keys) == 299 and poison.idempotency_key not in keys
    assert worker.starts == 3  # it died twice (crash_limit 2), the third start archived it


def test_a_crash_names_the_batch_prepared_ahead_which_runs_alone_once(
        tmp_path: Path, rabbitmq_url: str) -> None:
    # Given 400 messages on a route of batches of 100, one of them poison (at the 101st), whose
    # sink kills the worker only once the store holds two marker rows: its own batch's and the
    # next batch's, prepared ahead while the poison's sink call runs
    config_dir = config_for(tmp_path, rabbitmq_url, "crasher", delivery_limit=3)
    registry = registry_with(CRASHER)
    Bus.from_config_dir(config_dir, environ={}, registry=registry).open().close()
    db = tmp_path / "var" / "bus.db"
    envelopes = [Envelope.create("order.created", {"n": i}, source="test") for i in range(400)]
    poison = envelopes[100] = Envelope.create(
        "order.created", {"n": 100, "poison": True, "marked_rows": 2, "store": str(db)},
        source="test")
    publish_in_background(config_dir, envelopes, registry).join(60)
    out = tmp_path / "var" / "out.jsonl"
    worker = WorkerProcess([sys.executable, "-m", "tests.support.crashing_worker",
                            str(config_dir)], tmp_path / "worker.log")
    store = Store.open(f"sqlite:///{db}")
    try:
        worker.start()
        wait_for(worker.died, timeout=60, message="the worker killed by the poison")
        # When it died, two batches stood marked: the poison's and the one prepared ahead
        ids = [("orders", e.id) for e in envelopes]
        marked = store.crash_markers(ids, "someone-else")
        rows: dict[str, set[str]] = {}
        for (_route, envelope_id), marker in marked.items():
            rows.setdefault(marker.row, set()).add(envelope_id)
        assert len(rows) == 2, {row: len(members) for row, members in rows.items()}
        (ahead,) = [members for members in rows.values() if poison.id not in members]
        assert len(ahead) == 100
        key_of = {e.id: e.idempotency_key for e in envelopes}
        delivered_then = {line["idempotency_key"] for line in sink_lines(out)}
        assert not {key_of[i] for i in ahead} & delivered_then  # its sink had not run
        until_poison_archived(worker, store, out, 399)
    finally:
        worker.cleanup()
    # Then the batch prepared ahead ran alone once, message by message, and was delivered:
    # only the poison is a dead letter, nothing was delivered twice
    (letter,) = store.dead_letters()
    store.close()
    assert letter["envelope_id"] == poison.id and letter["reason"] == "crashed_worker"
    lines = sink_lines(out)
    assert sorted(line["idempotency_key"] for line in lines) == sorted(
        e.idempotency_key for e in envelopes if e is not poison)
    suspects = set(re.findall(r"worker\.crash_suspect\s.*?envelope_id=(\S+)",
                              (tmp_path / "worker.log").read_text(errors="replace")))
    assert ahead <= suspects, len(ahead - suspects)
    assert worker.starts == 3  # it died twice (crash_limit 2), the third start archived it


def test_sigterm_hands_back_nothing_so_no_delivery_count_is_burnt(tmp_path: Path,
                                                                   rabbitmq_url: str) -> None:
    # Given a worker busy with a backlog, stopped with SIGTERM and started again
    config_dir = config_for(tmp_path, rabbitmq_url, "jsonl", delivery_limit=10)
    Bus.from_config_dir(config_dir, environ={}).open().close()
    envelopes = [Envelope.create("order.created", {"n": i}, source="test") for i in range(3000)]
    publish_in_background(config_dir, envelopes).join(60)
    out = tmp_path / "var" / "out.jsonl"
    worker = WorkerProcess([sys.executable, "-m", "integration_bus", "worker",
                            "--config-dir", str(config_dir)], tmp_path / "worker.log")
    try:
        worker.start()
        wait_for(lambda: len(sink_lines(out)) >= 500, timeout=60)
        assert worker.stop() == 0
        worker.start()
        wait_for(lambda: len(sink_lines(out)) >= 3000, timeout=60)
        assert worker.stop() == 0
    finally:
        worker.cleanup()
    # Then the prefetched messages were handled, not returned: nothing was ever redelivered
    store = Store.open(f"sqlite:///{tmp_path / 'var' / 'bus.db'}")
    try:
        from integration_bus.store.schema import journal

        with store.db.begin() as conn:
            details = [r.detail for r in conn.execute(
                journal.select().where(journal.c.event == "received"))]
    finally:
        store.close()
    assert len(details) == 3000
    assert not any(d["redelivered"] for d in details)
    assert len(sink_lines(out)) == 3000


def test_internal_error_redelivers_until_the_delivery_limit_archives_it(
        tmp_path: Path, rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from integration_bus.batch import deliver
    from tests.support.probe import running

    # A bug in the batch code itself (not in a pipeline or a sink, whose errors are handled):
    # the worker drops its connection, so the message comes back with a higher delivery count.
    def buggy_triage(*_args: object) -> None:
        raise TypeError("a bug in the bus")

    monkeypatch.setattr(deliver, "_triage", buggy_triage)

    config_dir = write_config(tmp_path, f"""
        broker: {{url: "{rabbitmq_url}"}}
        store: {{url: sqlite:///var/bus.db}}
        sinks: {{out: {{connector: jsonl, path: var/out.jsonl}}}}
        routes:
          orders: {{from: [order.created], to: [out], delivery_limit: 2}}
        """)
    with Bus.from_config_dir(config_dir, environ={}) as bus:
        envelope = Envelope.create("order.created", {"n": 1}, source="test")
        publisher = bus.publisher()
        publisher.publish(envelope)
        publisher.close()
        worker = bus.worker()
        with running(worker.run):
            wait_for(lambda: len(bus.store.dead_letters()) == 1, timeout=60,
                     message="archived after the delivery limit")
        (letter,) = bus.store.dead_letters()
        assert letter["envelope_id"] == envelope.id and letter["reason"] == "delivery_limit"
        assert "TypeError" in (worker.state.last_error or "")
