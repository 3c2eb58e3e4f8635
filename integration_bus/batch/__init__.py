"""A worker batch: ``prepare`` (decode, map), ``deliver`` (claim, call sinks), each message's
fate from ``integration_bus.fate``, ``settle`` (what the store records). ``lane`` runs it."""

from integration_bus.batch.batch import Batch
from integration_bus.batch.item import Item, SinkCall, SinkResult

__all__ = ["Batch", "Item", "SinkCall", "SinkResult"]
