"""The store on SQLite and PostgreSQL: ledger claims, settlement, outbox, cursors."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from integration_bus.envelope import Envelope
from integration_bus.store import (
    Claim,
    ClaimOutcome,
    DeadLetter,
    JournalEntry,
    OutboxItem,
    Settlement,
    Store,
    fingerprint,
    utcnow,
)

LEASE = timedelta(minutes=5)


@pytest.fixture
def store(store_url: str) -> Store:
    s = Store.open(store_url)
    yield s
    s.close()


def test_migrations_are_idempotent(store_url: str) -> None:
    Store.open(store_url).close()
    Store.open(store_url).close()


def test_claim_then_done_makes_repeats_duplicates(store: Store) -> None:
    first = store.claim([Claim("erp", "K1", "E1#0", "E1"), Claim("erp", "K2", "E2#0", "E2")],
                        lease=LEASE)
    assert first == [ClaimOutcome.CLAIMED, ClaimOutcome.CLAIMED]
    store.settle(Settlement(done=[("erp", "K1", "E1#0")]))
    again = store.claim([Claim("erp", "K1", "E9#0", "E9"), Claim("shop", "K1", "E9#0", "E9")],
                        lease=LEASE)
    assert again == [ClaimOutcome.DONE, ClaimOutcome.CLAIMED]  # ledger is per sink
    assert store.ledger_state("erp", "K1") == "done"


def test_pending_claim_is_busy_for_another_copy(store: Store) -> None:
    store.claim([Claim("erp", "K", "E1#0", "E1")], lease=LEASE)
    assert store.claim([Claim("erp", "K", "E2#0", "E2")], lease=LEASE) == [ClaimOutcome.BUSY]
    # the same message not redelivered (e.g. a concurrent duplicate publish) is busy too
    assert store.claim([Claim("erp", "K", "E1#0", "E1")], lease=LEASE) == [ClaimOutcome.BUSY]


def test_own_claim_after_a_crash_is_in_doubt(store: Store) -> None:
    store.claim([Claim("erp", "K", "E1#0", "E1")], lease=LEASE)
    outcome = store.claim([Claim("erp", "K", "E1#0", "E1", redelivered=True)], lease=LEASE)
    assert outcome == [ClaimOutcome.IN_DOUBT]


def test_expired_lease_is_taken_over_in_doubt(store: Store) -> None:
    store.claim([Claim("erp", "K", "E1#0", "E1")], lease=LEASE)
    assert store.claim([Claim("erp", "K", "E2#0", "E2")], lease=timedelta(0)) == [
        ClaimOutcome.IN_DOUBT]


def test_failed_claim_can_be_claimed_again(store: Store) -> None:
    store.claim([Claim("erp", "K", "E1#0", "E1")], lease=LEASE)
    store.settle(Settlement(failed=[("erp", "K", "E1#0")]))
    assert store.claim([Claim("erp", "K", "E1#1", "E1")], lease=LEASE) == [ClaimOutcome.CLAIMED]


def test_same_key_twice_in_one_batch_claims_once(store: Store) -> None:
    outcomes = store.claim([Claim("erp", "K", "E1#0", "E1"), Claim("erp", "K", "E2#0", "E2")],
                           lease=LEASE)
    assert outcomes == [ClaimOutcome.CLAIMED, ClaimOutcome.BUSY]


def test_concurrent_claims_have_one_winner(store: Store) -> None:
    # Given eight workers racing for the same 200 keys
    results: list[list[ClaimOutcome]] = []
    barrier = threading.Barrier(8)

    def contend(n: int) -> None:
        barrier.wait()
        results.append(store.claim([Claim("erp", f"K{i}", f"W{n}#0", f"W{n}")
                                    for i in range(200)], lease=LEASE))

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Then every key was won exactly once
    for i in range(200):
        assert sum(r[i] is ClaimOutcome.CLAIMED for r in results) == 1


def test_settlement_writes_dead_letter_with_attempt_history(store: Store) -> None:
    envelope = Envelope.create("order.created", {"total": "19.99"}, source="test")
    now = utcnow()
    store.settle(Settlement(journal=[JournalEntry(envelope.id, "retried", now, route="orders",
                                                  sink="erp", attempt=0,
                                                  detail={"error_type": "TransientError",
                                                          "message": "timeout"})]))
    letter = DeadLetter(id="DL1", envelope=envelope.to_dict(), route="orders", reason="error",
                        error_type="PermanentError", message="store 0042 unknown", failed_at=now,
                        sink="erp", attempts=[{"attempt": 1, "at": now.isoformat()}])
    store.settle(Settlement(dead=[letter]))
    store.settle(Settlement(dead=[letter]))  # settling a redelivered batch again is harmless
    (row,) = store.dead_letters()
    assert [a["attempt"] for a in row["attempts"]] == [0, 1]
    assert row["envelope"]["payload"] == {"total": "19.99"}
    assert row["fingerprint"] == fingerprint("PermanentError", "store 0099 unknown", "orders",
                                             None)


def test_outbox_and_cursors(store: Store) -> None:
    envelope = Envelope.create("order.created", {"n": 1}, source="cli")
    store.outbox_add([OutboxItem("bus.ingress", "order.created", envelope)], reason="send")
    (row,) = store.outbox_claim("relay-a")
    assert row.envelope == envelope and row.routing_key == "order.created"
    assert store.outbox_claim("relay-b") == []  # claimed by relay-a
    store.outbox_release([row])
    (again,) = store.outbox_claim("relay-b")
    store.outbox_done([again])
    assert store.outbox_claim("relay-c") == [] and store.outbox_waiting() == 0
    assert store.cursor_get("jsonl:orders") is None
    store.cursor_set("jsonl:orders", "41")
    store.cursor_set("jsonl:orders", "42")
    assert store.cursor_get("jsonl:orders") == "42"


def test_history_retention_keeps_what_is_recent_or_unpublished(store: Store) -> None:
    old = utcnow() - timedelta(days=40)
    envelope = Envelope.create("order.created", {}, source="t")
    store.settle(Settlement(journal=[JournalEntry("E-old", "received", old),
                                     JournalEntry("E-new", "received", utcnow())]))
    store.outbox_add([OutboxItem("bus.ingress", "order.created", envelope)], reason="send")
    store.remember("shop", [("delivery-1", envelope.id)])
    counts = store.purge_history(timedelta(days=30))
    assert counts == {"journal": 1, "outbox": 0, "seen_keys": 0, "ledger": 0,
                      "crash_markers": 0}
    assert store.journal_for("E-new") and not store.journal_for("E-old")
    assert store.outbox_waiting() == 1  # unpublished rows are never purged
    assert store.seen("shop", ["delivery-1", "delivery-2"]) == {"delivery-1": envelope.id}


def test_retention_applies_each_table_its_own_rule(store: Store) -> None:
    # Given history of every kind that retention removes, and rows it must keep whatever their age
    store.settle(Settlement(journal=[JournalEntry("E1", "received", utcnow())]))
    sent, waiting = (Envelope.create("order.created", {"n": n}, source="t") for n in (1, 2))
    store.stage([OutboxItem("bus.ingress", "order.created", sent),
                 OutboxItem("bus.ingress", "order.created", waiting)], reason="send",
                cursor=("jsonl:orders", "7"))
    published, _ = store.outbox_claim("relay-a")
    store.outbox_done([published])
    store.remember("shop", [("delivery-1", sent.id)])
    store.claim([Claim("erp", "K-done", "E1#0", "E1"), Claim("erp", "K-pending", "E2#0", "E2")],
                lease=LEASE)
    store.settle(Settlement(done=[("erp", "K-done", "E1#0")]))
    store.mark_executing("b:1", [("orders", "E3")], "worker-gone")
    # When everything written before now counts as old
    counts = store.purge_history(timedelta(0))
    # Then each kind loses its old rows, and unpublished rows, open claims and cursors stay
    assert counts == {"journal": 1, "outbox": 1, "seen_keys": 1, "ledger": 1,
                      "crash_markers": 1}
    assert store.journal_for("E1") == [] and store.outbox_waiting() == 1
    assert store.seen("shop", ["delivery-1"]) == {}
    assert store.ledger_state("erp", "K-done") is None
    assert store.ledger_state("erp", "K-pending") == "pending"
    assert store.crash_markers([("orders", "E3")], "me") == {}
    assert store.cursor_get("jsonl:orders") == "7"
