"""Consuming through the bus's buffered py-amqp reads against kombu's stock connection.

    python bench/amqp_read.py [--quick] [--messages N] [--rounds R]

Each round fills a queue with N persistent 1 KB messages, then consumes and acks them with a
kombu ``Consumer`` (prefetch 200) on a stock ``kombu.Connection`` and on
``integration_bus.transport.amqp_io.Connection``, alternating which goes first. What is compared
is the consuming process's CPU seconds (``time.process_time``), which other load on the machine
disturbs less than wall-clock rates; both are printed. A third side, ``bus``, is the worker's own
consumer (``AmqpTransport.consumer``: deliveries read off the wire by ``amqp_frames``, fetched
in batches of 100, one ``basic.ack(multiple)`` per batch), printed with its ratio to stock. The
last line is ``RESULT ratio=<stock CPU s / buffered CPU s> stock_cpu_s=… buffered_cpu_s=…
bus_cpu_s=…`` (medians).
"""

from __future__ import annotations

import argparse
import statistics
import time

import kombu
from kombu import Consumer, Exchange, Producer, Queue
from loadavg import load_line
from vhost import fresh_vhost

from integration_bus.transport.amqp_io import Connection as Buffered

BODY = b"x" * 1024
PREFETCH = 200



def fill(url: str, queue: Queue, messages: int) -> None:
    with kombu.Connection(url) as conn:
        channel = conn.channel()
        queue(channel).declare()
        producer = Producer(channel, routing_key=queue.name, serializer=None)
        for _ in range(messages):
            producer.publish(BODY, content_type="application/octet-stream",
                             content_encoding="binary", delivery_mode=2)


def consume(url: str, queue: Queue, messages: int,
            connection: type[kombu.Connection]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) to consume and ack ``messages``."""
    got = [0]

    def on_message(_body: object, message: kombu.Message) -> None:
        got[0] += 1
        message.ack()

    with connection(url) as conn:
        consumer = Consumer(conn.channel(), [queue], callbacks=[on_message], accept=None)
        consumer.qos(prefetch_count=PREFETCH)
        with consumer:
            cpu, wall = time.process_time(), time.perf_counter()
            while got[0] < messages:
                conn.drain_events(timeout=30)
            return time.process_time() - cpu, time.perf_counter() - wall


def consume_bus(url: str, queue: Queue, messages: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for the worker's consumer to fetch and ack ``messages``."""
    from integration_bus.transport.amqp import AmqpTransport

    consumer = AmqpTransport(url).consumer([queue.name], PREFETCH)
    try:
        got = 0
        cpu, wall = time.process_time(), time.perf_counter()
        while got < messages:
            batch = consumer.fetch(100, 30)
            got += len(batch)
            consumer.ack(batch)
        return time.process_time() - cpu, time.perf_counter() - wall
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute")
    parser.add_argument("--messages", type=int)
    parser.add_argument("--rounds", type=int)
    args = parser.parse_args()
    messages = args.messages or (10_000 if args.quick else 30_000)
    rounds = args.rounds or 3
    url, drop_vhost = fresh_vhost()
    queue = Queue("bench.read", Exchange("", type="direct"), routing_key="bench.read")
    print(f"{messages} x {len(BODY)} B messages, {rounds} round(s), prefetch {PREFETCH}")
    print(load_line("start"), flush=True)
    cpu: dict[str, list[float]] = {"stock": [], "buffered": [], "bus": []}
    try:
        for round_no in range(1, rounds + 1):
            sides = [("stock", kombu.Connection), ("buffered", Buffered), ("bus", None)]
            for name, connection in sides if round_no % 2 else sides[::-1]:
                fill(url, queue, messages)
                used, wall = (consume(url, queue, messages, connection) if connection else
                              consume_bus(url, queue, messages))
                cpu[name].append(used)
                print(f"round {round_no} {name}: {used:.2f} s CPU, {messages / wall:,.0f} msg/s",
                      flush=True)
    finally:
        drop_vhost()
    stock, buffered = statistics.median(cpu["stock"]), statistics.median(cpu["buffered"])
    bus = statistics.median(cpu["bus"])
    print(f"bus consumer: {bus:.2f} s CPU, {1e6 * bus / messages:.1f} µs per message; "
          f"stock / bus {stock / bus:.2f}")
    print(load_line("end"))
    print(f"RESULT ratio={stock / buffered:.2f} stock_cpu_s={stock:.2f} "
          f"buffered_cpu_s={buffered:.2f} bus_cpu_s={bus:.2f}")


if __name__ == "__main__":
    main()
