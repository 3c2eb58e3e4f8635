"""A lane's settlements on PostgreSQL, committed while the lane runs its next batch.

Settling inline, a lane waits for the server for about a quarter of each batch (entering and
ending the journal's ``COPY``, the commit; docs/benchmarks.md, issue 16). Overlapping that
wait in another thread of the worker lost: the threads then take turns on the GIL. Here the
lane hands the server the whole settlement as **one statement** (journal rows, ledger
outcomes and crash-marker removals in data-modifying CTEs: one implicit transaction) through
libpq's asynchronous API, and goes on without waiting; the server writes it on its own core
while the lane maps and delivers the next batch. The lane acks the settled batch once the
result says it committed (:meth:`SettleBehind.done`), never before: the promise that a message
is acked only after its settlement is durable holds as it did.

Only the common settlement goes this way (:func:`eligible`): journal rows, ``done`` ledger
outcomes and whole crash-marker rows to remove. A batch with dead letters, released claims,
retries or holds settles inline as before. When anything goes wrong with a settlement sent
here (the server refused a value, the connection broke), the lane writes the same settlement
inline (``Store.settle``), which waits out an outage and makes refused values storable.

The crash marker of the lane's next batch, when the read-ahead buffer holds it, goes first on
the same connection, as a statement of its own: the lane waits for its commit alone (about
half a millisecond) before it runs that batch, as it waited for the settlement that carried it
before. A batch the lane prepares ahead while a sink call waits is marked on this connection
too when nothing is in flight on it (:meth:`SettleBehind.mark`); any other batch is marked
through the store's pool when it is taken.
"""

from __future__ import annotations

import select
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import URL

from integration_bus.envelope import dumps
from integration_bus.errors import StoreUnavailable
from integration_bus.redact import Redaction
from integration_bus.store.markers import MarkerKey, upsert_sql
from integration_bus.store.records import utcnow
from integration_bus.store.schema import crash_markers, journal, ledger
from integration_bus.store.settlement import Settlement, redacted

__all__ = ["SettleBehind", "SettleFailed", "eligible"]

_SETTLE = f"""
WITH rows AS (
  SELECT * FROM json_to_recordset($1::json) AS r(e text, v text, r text, s text, a int,
                                                 t timestamptz, m text, d jsonb)
), j AS (
  INSERT INTO {journal.name} (envelope_id, event, route, sink, attempt, at, mapping_version,
                              detail)
  SELECT e, v, r, s, a, t, m, COALESCE(d, 'null'::jsonb) FROM rows
), l AS (
  UPDATE {ledger.name} AS l SET state = 'done', done_at = $2::timestamptz
  FROM json_to_recordset($3::json) AS k(s text, k text, o text)
  WHERE l.sink = k.s AND l.idempotency_key = k.k AND l.owner = k.o
), m AS (
  DELETE FROM {crash_markers.name} WHERE id IN (SELECT json_array_elements_text($4::json))
)
SELECT 1
""".encode()

_MARK = upsert_sql("$1", "$2", "$3", "$4::jsonb").encode()

#: SQLSTATE classes of a connection that is gone or a server that is going away
_UNAVAILABLE_STATES = ("08", "57P", "53")


class SettleFailed(Exception):
    """The settlement sent last did not commit (or may not have): write it again inline."""


def eligible(batch: Settlement) -> bool:
    """Whether ``batch`` can be settled by one statement here: journal rows, ``done`` claims
    and whole crash-marker rows to remove, nothing else."""
    return (not batch.dead and not batch.failed and batch.mark is None
            and all(member is None for _row, member in batch.unmark))


class SettleBehind:
    """The lane's own PostgreSQL connection (opened on first use, beside the store's pool) in
    pipeline mode: settlements sent without waiting (one in flight at a time), each after the
    crash marker of the lane's next batch when that batch is known (:meth:`send`; the marker
    commits first, and :meth:`marked` waits for it alone). Thread-confined."""

    def __init__(self, url: URL, *, redaction: Redaction) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(
            hide_password=False)
        self._redaction = redaction
        self._settles: Any = None  # psycopg.Connection; its libpq connection in pipeline mode
        #: what was sent and is not read back yet, in order: "mark" and/or "settle"
        self._waiting: list[str] = []
        self._error: tuple[str, str] | None = None  # of the statement being read back
        #: the connection broke with a settlement in flight: it may or may not have committed
        self._lost = False

    # -- settlements -----------------------------------------------------------------------------
    def send(self, batch: Settlement, *,
             mark: tuple[str, Sequence[MarkerKey], str] | None = None) -> None:
        """Send ``batch`` (:func:`eligible`) to be committed, after ``mark`` (row, keys, owner:
        the next batch's crash marker, committed on its own first); return without waiting.
        Raises StoreUnavailable when the server cannot be reached (nothing was sent)."""
        assert not self._waiting, "read back what is in flight first"
        params = _params(redacted(batch, self._redaction))
        statements = [(_MARK, _mark_params(*mark))] if mark is not None else []
        self._send([*statements, (_SETTLE, params)])
        self._waiting = ["mark", "settle"] if mark is not None else ["settle"]

    def mark(self, row: str, keys: Sequence[MarkerKey], owner: str) -> bool:
        """Write a crash marker (row, (route, envelope id) keys, owner) and wait for its
        commit, when nothing is in flight on the connection; False, doing nothing, when
        something is (the caller marks through the store's pool). A lane's batch prepared
        ahead is marked so: one round trip on a connection it holds, where a pooled
        transaction takes three (the pool's ping, the upsert, the commit); for 100 keys
        0.5 ms and 0.1 ms of CPU instead of 1.0 ms and 0.45 (docs/benchmarks.md, issue 16,
        twelfth round). Raises StoreUnavailable when it did not commit."""
        if self._waiting or self._lost:
            return False
        self._send([(_MARK, _mark_params(row, keys, owner))])
        self._waiting = ["mark"]
        self.marked()
        return True

    def _send(self, statements: list[tuple[bytes, list[bytes]]]) -> None:
        """Send each statement with its parameters, each its own transaction (a pipeline
        sync after each), without waiting. Raises StoreUnavailable when the connection is
        gone (nothing was sent then)."""
        pg = self._connection("_settles").pgconn
        try:
            for sql, params in statements:
                pg.send_query_params(sql, params)
                pg.pipeline_sync()
            pg.flush()
        except Exception as exc:  # psycopg.OperationalError: the connection is gone
            self._drop("_settles")
            raise StoreUnavailable(f"store connection lost: {_first_line(exc)}") from exc

    def marked(self) -> None:
        """Wait for the marker sent with the settlement in flight. Raises StoreUnavailable
        when it did not commit (the batch it names is then marked again on its own)."""
        if "mark" not in self._waiting:
            return
        try:
            error = self._read(None)
        except SettleFailed as exc:
            raise StoreUnavailable(str(exc)) from exc
        if error is not None:
            raise StoreUnavailable(f"the crash marker was not written: {error}")

    def done(self, wait: float) -> bool:
        """Whether the settlement in flight committed, waiting up to ``wait`` s for it (True
        when none is in flight). Raises SettleFailed when it did not commit, or may not have:
        the caller writes it again inline."""
        if self._lost:
            self._lost = False
            raise SettleFailed("store connection lost with the settlement in flight")
        while self._waiting:
            kind = self._waiting[0]
            error = self._read(time.monotonic() + wait)
            if error is False:
                return False
            if kind == "settle" and error is not None:
                raise SettleFailed(error)
        return True

    def fileno(self) -> int | None:
        """The connection's socket while something is in flight on it (readable when its
        answer comes), else None. Never raises."""
        conn = self._settles
        if not self._waiting or conn is None:
            return None
        try:
            return int(conn.pgconn.socket)
        except Exception:  # psycopg.OperationalError: libpq has no socket for it any more
            return None

    def _read(self, deadline: float | None) -> str | bool | None:
        """Read back the first statement in :attr:`_waiting`: its error (None: committed), or
        False when ``deadline`` passed first. Raises SettleFailed when the connection broke
        (everything in flight is then lost to us)."""
        from psycopg import pq

        pg = self._settles.pgconn
        ended = False  # the last result was the end of a statement's results
        try:
            pg.consume_input()
            while True:
                while pg.is_busy():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    # poll, not select: a worker's descriptors may be numbered past FD_SETSIZE
                    readable = select.poll()
                    readable.register(pg.socket, select.POLLIN)
                    readable.poll(None if left is None else left * 1000)
                    pg.consume_input()
                result = pg.get_result()
                if result is None:
                    if ended:  # nothing more will come: what we wait for is not there
                        raise ConnectionError("the server answered nothing more")
                    ended = True  # the end of one statement's results
                    continue
                ended = False
                if result.status == pq.ExecStatus.PIPELINE_SYNC:
                    break
                if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK) \
                        and self._error is None:
                    self._error = _result_error(result)
        except Exception as exc:  # psycopg.OperationalError: the connection broke
            self._lost = "settle" in self._waiting[1:]  # the one being read raises here
            self._waiting = []
            self._error = None
            self._drop("_settles")
            raise SettleFailed(f"store connection lost: {_first_line(exc)}") from exc
        self._waiting.pop(0)
        error, self._error = self._error, None
        if error is None:
            return None
        if error[0].startswith(_UNAVAILABLE_STATES) or pg.status != pq.ConnStatus.OK:
            self._lost = "settle" in self._waiting
            self._waiting = []
            self._drop("_settles")
        return f"{error[0]}: {error[1]}"

    def close(self) -> None:
        self._drop("_settles")
        self._waiting = []
        self._lost = False

    # -- connections -----------------------------------------------------------------------------
    def _connection(self, name: str) -> Any:
        conn = getattr(self, name)
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        import psycopg  # the store is PostgreSQL: installed

        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5,
                                   client_encoding="utf8")
            if name == "_settles":
                conn.pgconn.enter_pipeline_mode()
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"store unavailable: {_first_line(exc)}") from exc
        setattr(self, name, conn)
        return conn

    def _drop(self, name: str) -> None:
        conn = getattr(self, name)
        setattr(self, name, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: nothing to do
                pass


def _mark_params(row: str, keys: Sequence[MarkerKey], owner: str) -> list[bytes]:
    """The parameters of ``_MARK``: the row, its owner, now, and each key once."""
    return [row.encode(), owner.encode(), utcnow().isoformat().encode(),
            dumps([list(k) for k in dict.fromkeys(keys)])]


def _params(batch: Settlement) -> list[bytes]:
    stamps: dict[datetime, datetime] = {}
    rows = []
    for e in batch.journal:
        at = stamps.get(e.at)
        if at is None:  # the bus's times are UTC; a naive one is taken as such (as COPY does)
            at = stamps[e.at] = e.at if e.at.tzinfo else e.at.replace(tzinfo=UTC)
        rows.append({"e": e.envelope_id, "v": e.event, "r": e.route, "s": e.sink,
                     "a": e.attempt, "t": at, "m": e.mapping_version,
                     "d": e.clipped_detail()})
    done = [{"s": s, "k": k, "o": o} for s, k, o in batch.done]
    rows_gone = [row for row, _member in batch.unmark]
    return [dumps(rows), utcnow().isoformat().encode(), dumps(done), dumps(rows_gone)]


def _result_error(result: Any) -> tuple[str, str]:
    from psycopg import pq

    state = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
    message = (result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b"").decode(
        errors="replace")
    return state, message


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
