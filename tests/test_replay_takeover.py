"""Replay resumes at once: outbox rows claimed by a process that died are taken over by the next
run immediately (owner identity host + pid + start time, checked for liveness), not after the
claim's lease. The kill is deterministic: a proxy holds the broker's confirms once the replay
has published its first batch, so the CLI is killed holding claimed, unconfirmed rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from integration_bus.envelope import Envelope
from integration_bus.liveness import holder_alive, process_identity, start_time
from integration_bus.store import OutboxItem, Store
from integration_bus.store.schema import outbox
from tests.dlq_project import FIXED, effects, make_project, order, publish, set_mapping, worker
from tests.support.holding_proxy import HoldingProxy
from tests.support.probe import wait_for
from tests.test_dlq import statuses

REPO = Path(__file__).resolve().parent.parent


def _pending(root: Path) -> dict[str, int]:
    store = Store.open(f"sqlite:///{root / 'var' / 'bus.db'}", migrate=False)
    try:
        return store.outbox_pending()
    finally:
        store.close()


@pytest.mark.rabbitmq
@pytest.mark.faults
def test_replay_killed_holding_claims_is_taken_over_at_once(tmp_path: Path,
                                                            rabbitmq_url: str) -> None:
    config_dir = make_project(tmp_path, rabbitmq_url)
    publish(config_dir, [order(n, "qty") for n in range(1000)])
    with worker(config_dir) as bus:
        wait_for(lambda: len(bus.store.dead_letters(limit=2000)) == 1000, timeout=90,
                 message="1,000 dead letters")
    set_mapping(tmp_path, FIXED)
    host, _, vhost = rabbitmq_url.rpartition("/")
    assert host.endswith(":5672")
    with HoldingProxy(5672, hold_after=64 * 1024) as proxy, worker(config_dir):
        # Given a replay whose broker confirms stop arriving once it has published 64 KB,
        # i.e. in the middle of its first claimed batch
        held = tmp_path / "config-held"
        held.mkdir()
        (held / "bus.yaml").write_text((config_dir / "bus.yaml").read_text().replace(
            rabbitmq_url, f"{host[:-len(':5672')]}:{proxy.port}/{vhost}"))
        command = [sys.executable, "-m", "integration_bus", "dlq", "replay", "--route",
                   "orders", "--config-dir"]
        with (tmp_path / "killed.log").open("wb") as log:
            proc = subprocess.Popen([*command, str(held)], cwd=REPO, stdout=log, stderr=log)
            try:
                assert proxy.holding.wait(60), (tmp_path / "killed.log").read_text()
                wait_for(lambda: any(_pending(tmp_path)), message="claimed rows")
            finally:
                proc.send_signal(signal.SIGKILL)  # killed holding claimed rows
                proc.wait(10)
        claimed = {h: n for h, n in _pending(tmp_path).items() if h}
        assert sum(claimed.values()) > 0, _pending(tmp_path)  # really killed mid-batch
        (holder,) = claimed
        assert holder.split(":")[1] == str(proc.pid) and not holder_alive(holder)
        # When it is run again at once (well inside the 60 s claim lease)
        started = time.monotonic()
        rerun = subprocess.run([*command, str(config_dir)], cwd=REPO, capture_output=True,
                               text=True, env={**os.environ}, timeout=120)
        rerun_s = time.monotonic() - started
        # Then it takes the dead process's rows over, says so, and exits 0 only when done
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert f"took over {claimed[holder]} outbox row(s) claimed by {holder} (its process " \
            "is gone)" in rerun.stdout
        assert "waiting for" not in rerun.stderr  # at once: the lease was not waited out
        assert "replayed" in rerun.stdout
        assert _pending(tmp_path) == {}
        assert "replaying" not in statuses(tmp_path)
        wait_for(lambda: len(effects(tmp_path)) >= 1000, timeout=90, message="all delivered")
    # And each of the 1,000 was delivered exactly once
    keys = effects(tmp_path)
    assert len(keys) == 1000 and len(set(keys)) == 1000
    assert statuses(tmp_path) == {"replayed": 1000}
    print(f"RESULT replay kill: delivered={len(set(keys))} lost={1000 - len(set(keys))} "
          f"duplicates={len(keys) - len(set(keys))} taken_over={claimed[holder]} "
          f"left_replaying=0 rerun_s={rerun_s:.1f}")


def _claimed_by(store: Store, holders: list[str]) -> None:
    """One outbox row per holder, claimed by it just now."""
    items = [OutboxItem("bus.requeue", "orders", Envelope.create("t.x", {"n": i}, source="t"))
             for i in range(len(holders))]
    store.outbox_add(items, reason="replay")
    with store.db.begin() as conn:
        ids = [r.id for r in conn.execute(outbox.select().order_by(outbox.c.id))]
        for row_id, holder in zip(ids, holders, strict=True):
            conn.execute(outbox.update().where(outbox.c.id == row_id).values(
                claimed_by=holder, claimed_at=outbox.c.created_at))


def test_a_relay_takes_over_only_claims_of_dead_holders(tmp_path: Path) -> None:
    """The running bus's relay (no dead-letter filter) finishes rows a dead replay left."""
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait(30)
    me = process_identity()
    host, pid, started = me.split(":")
    dead = f"{host}:{exited.pid}:1:abc"  # a process of this host that has exited
    reused = f"{host}:{pid}:{int(started) + 1}:abc"  # our pid, another start time: reused
    alive = f"{me}:other"  # a live relay in this very process
    remote = "elsewhere.example:1:1:abc"  # another host: only its lease can free it
    legacy = f"relay-{exited.pid}"  # an old-format name: unknown, so alive
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    zombie = f"{host}:{killed.pid}:{start_time(killed.pid)}:abc"
    assert holder_alive(zombie)
    killed.kill()  # killed, and not reaped yet: a zombie runs no more
    wait_for(lambda: not holder_alive(zombie), message="the killed holder is seen dead")
    store = Store.open(f"sqlite:///{tmp_path / 'bus.db'}")
    try:
        _claimed_by(store, [dead, reused, alive, remote, legacy, zombie])
        rows = store.outbox_claim(f"{me}:relay")
        assert sorted(r.taken_from or "" for r in rows) == sorted([dead, reused, zombie])
        assert store.outbox_pending() == {f"{me}:relay": 3, alive: 1, remote: 1, legacy: 1}
        # past the lease, every claim is free again
        later = store.outbox_claim(f"{me}:late", lease=timedelta(0))
        assert sorted(r.taken_from or "" for r in later) == sorted(
            [alive, remote, legacy, f"{me}:relay", f"{me}:relay", f"{me}:relay"])
    finally:
        store.close()
        killed.wait(10)
