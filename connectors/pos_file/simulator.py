"""POS lanes as a simulator (entry point ``pos`` of ``integration_bus.simulators``): tills of
the reference scenario's stores dropping their end-of-day sales files (``bus demo``)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from connectors.pos_file.lane import write_daily_file
from connectors.pos_file.layout_file import load_layout
from integration_bus.connector import Simulator

__all__ = ["ScenarioLanes", "simulator"]


class ScenarioLanes:
    """Tills writing daily sales files as the ``daily_sales`` layout describes them. Nothing
    runs in the background: ``start()`` and ``stop()`` have nothing to do."""

    def start(self) -> ScenarioLanes:
        return self

    def drop_daily_file(self, inbox: Path, layout: Path, *, name: str, store: str,
                        records: int, seed: int, day: date, seq: int) -> None:
        """A till's end-of-day file ``inbox/name`` of ``records`` deterministic sale lines in
        the layout at ``layout``, written under a temp name and renamed into place (the
        ``rename`` readiness policy). Raises LayoutError when the layout does not load."""
        loaded = load_layout(layout)
        temp = inbox / f".{name}.tmp"
        write_daily_file(temp, loaded, store=store, records=records, seed=seed, day=day,
                         seq=seq)
        temp.rename(inbox / name)

    def stop(self) -> None:
        """Nothing to release."""


simulator = Simulator(
    name="pos", summary="POS lanes writing daily sales files (the demo's stores)",
    create=ScenarioLanes)
