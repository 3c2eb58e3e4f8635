"""OpenTelemetry tracing and the journal's lineage (``bus trace``).

Spans are collected with the SDK's own in-memory exporter; the flow runs on the embedded broker
(and the SQLite or PostgreSQL store, whose JSON queries differ).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pydantic import BaseModel, ConfigDict

from integration_bus.cli import cli
from integration_bus.connector import ConnectorContext, ConnectorPlugin, Envelope, TransientError
from integration_bus.errors import ConfigError
from integration_bus.runtime import Bus
from integration_bus.settings import load_config
from integration_bus.tracing import Tracing
from tests.conftest import write_config
from tests.support.probe import registry_with, running, wait_for

REPO = Path(__file__).resolve().parent.parent


class FlakyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target:
    """Fails the first call for each key (transient), takes the second; keeps what it got."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.got: dict[str, Envelope] = {}


class FlakySink:
    def __init__(self, context: ConnectorContext, target: Target) -> None:
        self.name = context.instance
        self._target = target

    def deliver(self, envelope: Envelope) -> None:
        with self._target.lock:
            key = envelope.idempotency_key
            self._target.calls[key] = self._target.calls.get(key, 0) + 1
            if self._target.calls[key] == 1:
                raise TransientError("the ERP timed out", endpoint="erp")
            self._target.got[key] = envelope

    def close(self) -> None:
        pass


CONFIG = """
    broker: {{url: "", retry_tiers: [50ms, 1s]}}
    store: {{url: "{store}"}}
    sinks:
      republish: {{connector: bus, type: order.checked}}
      erp: {{connector: flaky}}
    routes:
      orders: {{from: [order.placed], to: [republish]}}
      checked:
        from: [order.checked]
        to: [erp]
        retry: {{max_attempts: 3, initial_delay: 50ms, max_delay: 50ms}}
    """


def run_flow(tmp_path: Path, store_url: str, tracing: Tracing) -> tuple[Bus, Target, Envelope]:
    """One order through two routes, the second retried once; returns the closed bus."""
    target = Target()
    plugin = ConnectorPlugin(name="flaky", summary="test", sink_config=FlakyConfig,
                             create_sink=lambda cfg, ctx: FlakySink(ctx, target))
    registry = registry_with(plugin)
    config = load_config(write_config(tmp_path, CONFIG.format(store=store_url)), registry, {})
    bus = Bus(config, registry=registry, tracing=tracing)
    with bus:
        order = Envelope.create("order.placed", {"order": "ORDER-77"}, source="web",
                                idempotency_key="shop:ORDER-77")
        publisher = bus.publisher()
        publisher.publish(order)
        publisher.close()
        with running(bus.worker().run):
            wait_for(lambda: len(target.got) == 1, timeout=30, message="the order delivered")
    return bus, target, order


def collecting() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider), exporter


def test_one_order_is_one_trace_across_routes_sinks_and_a_retry(tmp_path: Path) -> None:
    # Given tracing on, collecting spans in memory
    tracing, exporter = collecting()
    # When an order goes through a republishing route and a route whose sink fails once
    _, target, order = run_flow(tmp_path, f"sqlite:///{tmp_path / 'bus.db'}", tracing)
    spans = exporter.get_finished_spans()
    # Then every span belongs to one trace, started where the order entered the bus
    assert len({s.context.trace_id for s in spans}) == 1, [s.name for s in spans]
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == "source web"
    assert root.attributes["bus.idempotency_key"] == "shop:ORDER-77"
    assert len(by_name["route checked"]) == 2 and len(by_name["sink erp"]) == 2
    assert {s.name for s in spans} == {"source web", "route orders", "sink republish",
                                       "publish order.checked", "route checked", "sink erp",
                                       "retry checked"}

    def parent(span: Any) -> Any:
        return next(s for s in spans if s.context.span_id == span.parent.span_id)

    # ...chained: source -> route -> sink -> publish -> route -> sink, retry -> route again
    (first_try, second_try) = sorted(by_name["route checked"],
                                     key=lambda s: s.attributes["bus.attempt"])
    assert parent(first_try).name == "publish order.checked"
    assert parent(parent(first_try)).name == "sink republish"
    assert parent(parent(parent(first_try))).name == "route orders"
    assert parent(parent(parent(parent(first_try)))) is root
    assert parent(second_try).name == "retry checked"
    assert parent(parent(second_try)) is first_try
    failed, succeeded = sorted(by_name["sink erp"], key=lambda s: s.start_time)
    assert failed.status.status_code is StatusCode.ERROR and "timed out" in (
        failed.status.description or "")
    assert succeeded.status.status_code is not StatusCode.ERROR
    assert first_try.attributes["bus.outcome"] == "retried"
    assert second_try.attributes["bus.outcome"] == "delivered"
    # and the envelope the sink got names its sink span as parent (W3C traceparent)
    delivered = next(iter(target.got.values()))
    assert delivered.headers["traceparent"].split("-")[2] == format(
        succeeded.context.span_id, "016x")
    assert order.id == root.attributes["messaging.message.id"]


def test_tracing_is_off_by_default_and_leaves_envelopes_alone(tmp_path: Path) -> None:
    tracing = Tracing.from_environ({})
    assert not tracing.enabled
    assert not Tracing.from_environ({"OTEL_TRACES_EXPORTER": "none"}).enabled
    assert not Tracing.from_environ({"OTEL_TRACES_EXPORTER": "console",
                                     "OTEL_SDK_DISABLED": "true"}).enabled
    _, target, _ = run_flow(tmp_path, f"sqlite:///{tmp_path / 'bus.db'}", tracing)
    delivered = next(iter(target.got.values()))
    assert "traceparent" not in delivered.headers


def test_exporters_come_from_otel_traces_exporter() -> None:
    console = Tracing.from_environ({"OTEL_TRACES_EXPORTER": "console"})
    try:
        assert console.enabled
    finally:
        console.shutdown()
    with pytest.raises(ConfigError, match=r"'zipkin-nope'.*not installed"):
        Tracing.from_environ({"OTEL_TRACES_EXPORTER": "zipkin-nope"})
    with pytest.raises(ConfigError, match="not supported"):
        Tracing.from_environ({"OTEL_TRACES_EXPORTER": "otlp",
                              "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"})


def test_lineage_and_business_key_in_the_journal(tmp_path: Path, store_url: str) -> None:
    # Given an order that went through two routes (tracing off: lineage is the journal's)
    bus, _, order = run_flow(tmp_path, store_url, Tracing.off())
    with Bus(bus.config, registry=bus.registry, migrate=False, tracing=Tracing.off()) as reader:
        store = reader.store
        # When its descendants are asked for: the republished envelope
        (child,) = store.lineage(order.id)["descendants"]
        assert child["type"] == "order.checked" and child["routes"] == ["checked"]
        assert [e["event"] for e in child["events"]] == [
            "received", "retried", "received", "delivered"]
        # ...and the child's ancestors lead back to the order
        family = store.lineage(child["envelope_id"])
        assert [a["envelope_id"] for a in family["ancestors"]] == [order.id]
        assert family["descendants"] == []
        # Then the business key finds both, as a whole part of the key only
        found = store.envelopes_of_key("ORDER-77")
        assert [f["envelope_id"] for f in found] == [order.id, child["envelope_id"]]
        assert store.envelopes_of_key("ORDER-7") == []
        assert store.envelopes_of_key("%") == []


@pytest.mark.slow
def test_bus_demo_traces_a_web_order_through_every_route_and_trace_finds_it(
        tmp_path: Path) -> None:
    # Given the project on the embedded defaults, tracing to the console
    for part in ("config", "mappings", "schemas"):
        shutil.copytree(REPO / part, tmp_path / part)
    env = {**os.environ, "BUS_BROKER_URL": "", "OTEL_TRACES_EXPORTER": "console",
           "OTEL_SERVICE_NAME": "bus-demo"}
    env.pop("BUS_STORE_URL", None)
    # When `bus demo` runs
    done = subprocess.run([sys.executable, "-m", "integration_bus", "demo", "--config-dir",
                           str(tmp_path / "config"), "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    spans = [json.loads(line) for line in lines if line.startswith('{"name"')]
    rest = "\n".join(line for line in lines if not line.startswith('{"name"'))
    summary = json.loads(rest[rest.index("{"):])
    assert summary["nothing_lost"] is True
    # Then one trace id covers a web order's route, the gate and the order saga's route
    traces: dict[str, set[str]] = {}
    for span in spans:
        traces.setdefault(span["context"]["trace_id"], set()).add(span["name"])
        assert span["resource"]["attributes"]["service.name"] == "bus-demo"
    whole = {"route web_orders", "sink orders", "route order_availability", "sink order_gate",
             "route order_fulfilment", "sink order_saga"}
    complete = [names for names in traces.values() if whole <= names]
    accepted = summary["simulated"]["orders_sent"] - summary["simulated"]["short_orders_sent"]
    assert len(complete) == accepted > 0
    # ...and a short-stock order's trace ends at the gate, marked failed
    gate = [s for s in spans if s["name"] == "sink order_gate"
            and s["status"]["status_code"] == "ERROR"]
    assert len(gate) == summary["simulated"]["short_orders_sent"]
    # When `bus trace --key` is asked for one order number
    order_key = next(s["attributes"]["bus.idempotency_key"] for s in spans
                     if s["name"] == "route order_availability"
                     and s["attributes"].get("bus.outcome") == "delivered")
    number = order_key.split("shopify-")[1].split(">")[0]
    env["BUS_STORE_URL"] = f"sqlite:///{tmp_path / 'var' / 'demo' / 'bus.db'}"
    shown = subprocess.run([sys.executable, "-m", "integration_bus", "trace", "--config-dir",
                            str(tmp_path / "config"), "--key", number, "--json"], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)["envelopes"]
    # Then it lists the webhook, the canonical order and the accepted order, across routes
    assert [f["type"] for f in found] == ["shop.shopify.order_created", "order.created",
                                          "order.accepted"]
    assert [f["routes"] for f in found] == [["web_orders"], ["order_availability"],
                                            ["order_fulfilment"]]
    # and tracing the webhook's envelope follows it to the same descendants
    traced = subprocess.run([sys.executable, "-m", "integration_bus", "trace", "--config-dir",
                             str(tmp_path / "config"), found[0]["envelope_id"], "--json"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert traced.returncode == 0, traced.stderr
    family = json.loads(traced.stdout)
    assert family["ancestors"] == []
    assert [d["envelope_id"] for d in family["descendants"]] == [
        f["envelope_id"] for f in found[1:]]


def test_bus_trace_prints_the_flow_and_finds_a_key(tmp_path: Path) -> None:
    # Given an order that went through two routes, and the CLI pointed at the same store
    store = f"sqlite:///{tmp_path / 'bus.db'}"
    _, _, order = run_flow(tmp_path / "flow", store, Tracing.off())
    config_dir = write_config(tmp_path / "cli", f"""
        store: {{url: "{store}"}}
        sinks: {{out: {{connector: log}}}}
        routes: {{r: {{from: [a.b], to: [out]}}}}
        """)

    def trace(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["trace", "--config-dir", str(config_dir), *args],
                                    env={"COLUMNS": "250"})
        return result.exit_code, result.output

    # When the order's envelope is traced, Then its journal and the flow after it are shown
    code, out = trace(order.id)
    assert code == 0, out
    assert f"journal of {order.id}" in out and f"flow of {order.id}" in out
    assert "order.checked" in out and "retried@checked->erp" in out
    # When the key is asked for, Then both envelopes are listed, the order first
    code, out = trace("--key", "ORDER-77")
    assert code == 0, out
    assert out.index("order.placed") < out.index("order.checked")
    code, out = trace("--key", "ORDER-7")
    assert code == 1 and "no envelope with key 'ORDER-7'" in out
    # and asking for both, or neither, is a usage error
    assert trace()[0] == 2
    assert trace(order.id, "--key", "ORDER-77")[0] == 2


def test_the_bus_runs_without_the_opentelemetry_sdk(tmp_path: Path) -> None:
    # Given a Python where the OpenTelemetry SDK cannot be imported (the API can: FastAPI
    # itself depends on it)
    config_dir = write_config(tmp_path, """
        store: {url: sqlite:///var/bus.db}
        sinks: {out: {connector: jsonl, path: var/out.jsonl}}
        routes: {r: {from: [a.b], to: [out]}}
        """)
    script = f"""
import sys, threading
sys.modules["opentelemetry.sdk"] = None  # any import of it fails
from pathlib import Path
from integration_bus.envelope import Envelope
from integration_bus.errors import ConfigError
from integration_bus.runtime import Bus
with Bus.from_config_dir(Path({str(config_dir)!r}), environ={{}}) as bus:
    assert not bus.tracing.enabled
    bus.publisher().publish(Envelope.create("a.b", {{"n": 1}}, source="t"))
    stop = threading.Event()
    worker = bus.worker()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    while worker.state.handled < 1:
        stop.wait(0.02)
    stop.set()
    thread.join()
import os
os.environ["OTEL_TRACES_EXPORTER"] = "console"
try:
    Bus.from_config_dir(Path({str(config_dir)!r}), environ={{}})
except ConfigError as exc:
    print("refused:", exc)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    # Then the bus delivers with tracing off, and asking for tracing names the extra
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "var" / "out.jsonl").read_text().count("\n") == 1
    assert "refused:" in done.stdout and "integration-bus[otel]" in done.stdout
