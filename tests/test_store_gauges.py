"""What the watching side reads from the store, on SQLite and PostgreSQL: dead letters waiting
per route and failure group, and input sources refused per source and reason."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from integration_bus.envelope import new_id
from integration_bus.store import DeadLetter, JournalEntry, Settlement, Store, utcnow


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store.open(store_url)
    yield s
    s.close()


def letter(route: str | None, message: str, step: str | None = None) -> DeadLetter:
    return DeadLetter(id=new_id(), envelope={"id": new_id(), "source": "feed"}, route=route,
                      reason="error", error_type="MappingError", message=message,
                      failed_at=utcnow(), step=step)


def event(source: str, reason: str, **detail: object) -> JournalEntry:
    return JournalEntry(new_id(), "x.refused", utcnow(),
                        detail={"connector": source, "rejection": reason, **detail})


def test_dead_letters_waiting_per_route_and_group(store: Store) -> None:
    store.settle(Settlement(dead=[
        letter("orders", "no entry for '9999' in location", "plant"),
        letter("orders", "no entry for '0077' in location", "plant"),
        letter("orders", "qty is not a number", "parse"),
        letter(None, "line 3 is not JSON", "source:feed")]))
    rows = store.dead_letter_groups()
    assert sorted((route, count) for route, _, count in rows) == [
        ("orders", 1), ("orders", 2), ("source:feed", 1)]
    groups = {row["fingerprint"] for row in store.dead_letters()}
    assert {group for _, group, _ in rows} == groups


def test_source_rejections_per_source_and_reason_with_the_newest_names(store: Store) -> None:
    store.settle(Settlement(journal=[
        event("tills", "quarantined", file="A.DAT"),
        event("tills", "quarantined", file="B.DAT"),
        event("tills", "duplicate", file="A.DAT"),
        event("hooks", "webhook_4xx", shop="acme", answer="unauthorized", times=37),
        JournalEntry(new_id(), "pos_file.archived", utcnow(),
                     detail={"connector": "tills", "file": "C.DAT"}),  # not a rejection
        JournalEntry(new_id(), "delivered", utcnow(), route="orders",
                     detail={"rejection": "nonsense"})]))  # a route's event: not counted
    found = [(r.source, r.reason, r.count, r.newest) for r in store.source_rejections()]
    assert found == [("hooks", "webhook_4xx", 37, ["acme unauthorized"]),
                     ("tills", "duplicate", 1, ["A.DAT"]),
                     ("tills", "quarantined", 2, ["B.DAT", "A.DAT"])]
    assert all(r.last_at is not None for r in store.source_rejections())
