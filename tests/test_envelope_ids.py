"""Envelope ids: the bus builds its ULIDs itself (issue 16); an independent decoder (python-ulid)
must read them as ULIDs carrying the time they were made."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from ulid import ULID

from integration_bus.envelope import Envelope, new_id
from integration_bus.metrics import ulid_seconds


def test_ids_are_ulids_of_their_creation_time() -> None:
    before = time.time()
    ids = [new_id() for _ in range(1000)]
    after = time.time()
    for value in ids:
        assert len(value) == 26 and value == value.upper()
        decoded = ULID.from_str(value)
        assert str(decoded) == value  # canonical form: python-ulid writes it back the same
        assert before - 0.001 <= decoded.timestamp <= after + 0.001
        assert ulid_seconds(value) == decoded.timestamp
        assert ulid_seconds(value.lower()) == decoded.timestamp


def test_an_envelope_is_created_in_the_millisecond_its_id_names() -> None:
    # (the flow age of a message is read from the ULID of its correlation id; under load, two
    # readings of the clock for id and created_at differed by milliseconds)
    first = Envelope.create("order.created", {"n": 1}, source="t")
    made = [first, *(first.derive("order.accepted") for _ in range(20_000))]
    epoch, millisecond = datetime(1970, 1, 1, tzinfo=UTC), timedelta(milliseconds=1)
    for envelope in made:
        assert ULID.from_str(envelope.id).milliseconds == \
            (envelope.created_at - epoch) // millisecond, envelope


def test_the_time_of_an_id_that_is_no_ulid_is_none() -> None:
    for other in ("I1ARZ3NDEKTSV4RRFFQ69G5FAV",  # I is not Crockford's
                  "0_ARZ3NDEKTSV4RRFFQ69G5FAV", " 1ARZ3NDEKTSV4RRFFQ69G5FAV",
                  "-1ARZ3NDEKTSV4RRFFQ69G5FAV",  # what int() would take
                  "order-4711", "01ARZ3NDEKTSV4RRFFQ69G5FAV0"):
        assert ulid_seconds(other) is None, other


def test_ids_sort_by_creation_time() -> None:
    first = new_id()
    deadline = time.monotonic() + 1.0
    while (second := new_id())[:10] == first[:10]:  # the next millisecond
        assert time.monotonic() < deadline
    assert first < second
    assert ULID.from_str(first).timestamp < ULID.from_str(second).timestamp


def test_ids_do_not_repeat_within_a_millisecond_or_across_a_fork() -> None:
    many = [new_id() for _ in range(200_000)]
    assert len(set(many)) == len(many)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child's generator is reseeded: its ids are not the parent's next ones
        os.write(write, " ".join(new_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    child = b""
    while chunk := os.read(read, 65536):
        child += chunk
    os.close(read)
    os.waitpid(pid, 0)
    mine = [new_id() for _ in range(50)]
    assert not {i[10:] for i in child.decode().split()} & {i[10:] for i in mine}


def test_a_created_envelope_uses_them() -> None:
    envelope = Envelope.create("sale.recorded", {"n": 1}, source="test")
    assert ULID.from_str(envelope.id)
    assert envelope.correlation_id == envelope.idempotency_key == envelope.id
