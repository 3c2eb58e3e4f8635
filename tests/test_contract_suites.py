"""The contract suites fail a plugin that breaks the contract: a sink that takes effect twice
for one key, a source that acknowledges its input before the bus confirmed it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

BROKEN = '''
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from integration_bus.connector import ConnectorContext, Envelope, Publisher, TransientError
from integration_bus.testing import (
    AckCount, ContractBus, EffectCount, EnvelopeFactory, Feed, SinkContract, SinkFactory,
    SourceContract, SourceFactory,
)


class AppendingSink:
    """Appends every delivery (no key sent, no lookup): a redelivery is a second effect.
    Raises a plain error where the target is down (not a TransientError)."""

    def __init__(self, log: list[str], name: str = "broken", down: bool = False) -> None:
        self.name, self._log, self._down = name, log, down

    def deliver(self, envelope: Envelope) -> None:
        if self._down:
            raise OSError("connection refused")
        self._log.append(envelope.idempotency_key)

    def close(self) -> None:
        pass


class TestAppendingSink(SinkContract):
    @pytest.fixture
    def log(self) -> list[str]:
        return []

    @pytest.fixture
    def make_sink(self, log: list[str]) -> SinkFactory:
        return lambda: AppendingSink(log)

    @pytest.fixture
    def make_envelope(self) -> EnvelopeFactory:
        return lambda key: Envelope.create("a.b", {}, source="t", idempotency_key=key)

    @pytest.fixture
    def effects(self, log: list[str]) -> EffectCount:
        return log.count

    @pytest.fixture
    def make_unreachable_sink(self, log: list[str]) -> SinkFactory:
        return lambda: AppendingSink(log, down=True)


class EagerSource:
    """Counts a unit acknowledged as soon as it was read, whatever the publish said."""

    def __init__(self, inbox: list[int], acked: list[int], context: ConnectorContext) -> None:
        self.name, self._inbox, self._acked = context.instance, inbox, acked

    def run(self, publisher: Publisher, stop: threading.Event) -> None:
        while not stop.is_set():
            while self._inbox:
                unit = self._inbox.pop(0)
                self._acked.append(unit)  # acknowledged before the publish: the bug
                publisher.publish_many([Envelope.create("a.b", {"n": unit}, source=self.name,
                                                        idempotency_key=f"u{unit}")])
            stop.wait(0.02)

    def close(self) -> None:
        pass


class TestEagerSource(SourceContract):
    settle_timeout = 3.0

    @pytest.fixture
    def state(self) -> tuple[list[int], list[int], list[int]]:
        return [], [], [0]

    @pytest.fixture
    def make_source(self, state: tuple[list[int], list[int], list[int]]) -> SourceFactory:
        return lambda context: EagerSource(state[0], state[1], context)

    @pytest.fixture
    def feed(self, state: tuple[list[int], list[int], list[int]]) -> Feed:
        def add(count: int) -> None:
            for _ in range(count):
                state[2][0] += 1
                state[0].append(state[2][0])
        return add

    @pytest.fixture
    def acknowledged(self, state: tuple[list[int], list[int], list[int]]) -> AckCount:
        return lambda: len(state[1])
'''


def test_a_broken_sink_and_a_broken_source_fail_their_contracts(tmp_path: Path) -> None:
    # Given a sink with a second effect per redelivery and a source that acks early
    (tmp_path / "test_broken.py").write_text(textwrap.dedent(BROKEN))
    # When the contract suites run against them
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE",
         "test_broken.py"], cwd=tmp_path, capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    output = result.stdout + result.stderr
    failed = {line.split("::")[-1].split(" ")[0] for line in output.splitlines()
              if line.startswith("FAILED")}
    # Then exactly the broken promises fail, and the rest of each suite passes
    assert result.returncode == 1, output
    assert failed == {
        "test_a_redelivery_after_a_crash_has_no_second_effect",
        "test_an_unreachable_target_is_transient",
        "test_nothing_is_acknowledged_or_lost_while_publishing_fails",
    }, output
