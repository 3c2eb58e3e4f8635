"""Self-checks for tests/support/services.py (private RabbitMQ / PostgreSQL instances)."""

from __future__ import annotations

import pathlib
import time

import kombu
import psycopg
import pytest
import sqlalchemy
from kombu.exceptions import OperationalError

from tests.support.services import PrivatePostgres, PrivateRabbitMQ, free_port

pytestmark = pytest.mark.slow

QUEUE = kombu.Queue(
    "bustest.selfcheck.quorum",
    exchange=kombu.Exchange("", type="direct"),
    routing_key="bustest.selfcheck.quorum",
    durable=True,
    queue_arguments={"x-queue-type": "quorum"},
)


def _proc_gone(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_free_port_never_repeats_and_avoids_shared_services() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    assert not ports & {5432, 5672, 4369, 25672}


def test_private_rabbitmq_quorum_queue_survives_kill(tmp_path: pathlib.Path) -> None:
    with PrivateRabbitMQ(tmp_path / "rabbitmq") as broker:
        assert broker.port != 5672
        assert broker.node_name != "rabbit@localhost"
        assert broker.url == f"amqp://guest:guest@127.0.0.1:{broker.port}//"

        with kombu.Connection(broker.url, transport_options={"confirm_publish": True}) as conn:
            producer = conn.Producer()
            # With confirm_publish, publish() returns only after the broker's ack.
            producer.publish(
                {"n": 1},
                exchange=QUEUE.exchange,
                routing_key=QUEUE.routing_key,
                declare=[QUEUE],
                delivery_mode=2,
                serializer="json",
                retry=False,
            )
            # RabbitMQ 3.10 writes the queue's Ra registration lazily (~1 s);
            # a crash before that loses the queue's Ra server (see docstring).
            broker.wait_quorum_queue_persisted(QUEUE.name)
            with pytest.raises(TimeoutError):  # a mere name prefix does not count
                broker.wait_quorum_queue_persisted("bustest.selfcheck", timeout=0.2)

            beam = broker.beam_pid
            assert beam is not None
            broker.kill()
            assert _proc_gone(beam)
            assert not broker.running
            # The connection opened before the crash is dead ...
            with pytest.raises((OSError, OperationalError, *conn.connection_errors)):
                producer.publish({"n": 2}, routing_key=QUEUE.routing_key, retry=False)

        # ... and new connections are refused.
        assert not broker.can_connect()
        with (
            pytest.raises(OperationalError, match="Connection refused"),
            kombu.Connection(broker.url, connect_timeout=2) as conn,
        ):
            conn.ensure_connection(max_retries=0)  # connect() would sleep 2 s before failing

        broker.start()
        assert broker.running
        with kombu.Connection(broker.url, transport_options={"confirm_publish": True}) as conn:
            channel = conn.default_channel
            # Passive declare: fails if the queue did not survive the crash.
            ok = channel.queue_declare(QUEUE.name, passive=True)
            assert ok.queue == QUEUE.name
            bound = QUEUE(channel)
            deadline = time.monotonic() + 30
            message = bound.get(no_ack=False)
            while message is None and time.monotonic() < deadline:
                # the quorum queue's Ra member may still be recovering its log
                time.sleep(0.1)
                message = bound.get(no_ack=False)
            assert message is not None, "confirmed message lost after kill/restart"
            assert message.payload == {"n": 1}
            message.ack()
            assert bound.get(no_ack=False) is None  # the unconfirmed publish never arrived

    # __exit__ stopped the node; stop() is idempotent.
    assert not broker.running
    broker.stop()
    assert not broker.can_connect()


def test_private_rabbitmq_graceful_stop_and_restart(tmp_path: pathlib.Path) -> None:
    broker = PrivateRabbitMQ(tmp_path / "rabbitmq")
    try:
        broker.start()
        beam = broker.beam_pid
        assert beam is not None
        broker.stop()
        assert _proc_gone(beam)
        assert not broker.can_connect()
        broker.start()
        assert broker.can_connect()
        assert "bustest-" in broker.ctl("status").stdout
    finally:
        broker.stop()
        broker.stop()


def test_private_postgres_keeps_data_across_stop(tmp_path: pathlib.Path) -> None:
    with PrivatePostgres(tmp_path / "postgres") as db:
        assert db.port != 5432
        assert db.url == f"postgresql+psycopg://postgres@127.0.0.1:{db.port}/postgres"
        data_dir = db.data_dir
        assert data_dir is not None and data_dir.exists()

        engine = sqlalchemy.create_engine(db.url)
        try:
            with engine.begin() as conn:
                conn.execute(sqlalchemy.text("CREATE TABLE selfcheck (id int PRIMARY KEY, v text)"))
                conn.execute(sqlalchemy.text("INSERT INTO selfcheck VALUES (1, 'kept')"))
        finally:
            engine.dispose()

        db.stop()
        assert not db.running
        db.stop()  # idempotent
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(db.dsn, connect_timeout=2).close()

        db.start()
        assert db.running
        with psycopg.connect(db.dsn) as conn:
            row = conn.execute("SELECT v FROM selfcheck WHERE id = 1").fetchone()
        assert row == ("kept",)

    # close() removed the private data directory and kept the log next to the test.
    assert not data_dir.exists()
    assert (tmp_path / "postgres" / "postgres.log").exists()
