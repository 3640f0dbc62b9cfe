"""The fleet store: devices, telemetry windows, events, rollouts, operator commands, alerts.

SQLAlchemy Core over SQLite (the default, a file in the project home) or PostgreSQL (by URL,
``postgresql+psycopg://...``): the same code, the same tests. Telemetry and events are unique by
``(device_id, seq)`` so duplicates (QoS 1 redeliveries, spool replays, a second collector on a
shared subscription) are dropped by the database itself; writes are batched by the collector.

Every table name may carry a ``prefix`` so several stores share one database (tests, or several
fleets in one PostgreSQL schema). Errors from the database are re-raised as
:class:`~edgeml.errors.FleetError` with a hint.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from edgeml.errors import FleetError
from edgeml.fleet.rollout import ACTIVE, DeviceView, Rollout

TELEMETRY_COLUMNS = (
    "device_id", "seq", "model", "version", "window_start", "window_end", "received_at", "requests", "errors",
    "p95_ms", "psi_max", "drift", "dropped", "body",
)
EVENT_COLUMNS = ("device_id", "seq", "ts", "received_at", "event", "from_state", "to_state", "model", "version",
                 "reason")

STATE_FIELDS = (
    "model",
    "version",
    "previous_version",
    "update_state",
    "update_target",
    "last_error",
    "runtime",
    "agent_version",
)


def _tables(meta: sa.MetaData, prefix: str) -> dict[str, sa.Table]:
    p = prefix
    devices = sa.Table(
        f"{p}devices",
        meta,
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("online", sa.Boolean, nullable=False, default=False),
        sa.Column("model", sa.String(128)),
        sa.Column("version", sa.String(64)),
        sa.Column("previous_version", sa.String(64)),
        sa.Column("update_state", sa.String(32)),
        sa.Column("update_target", sa.String(64)),
        sa.Column("last_error", sa.Text),
        sa.Column("group_name", sa.String(128)),
        sa.Column("runtime", sa.String(64)),
        sa.Column("agent_version", sa.String(64)),
        sa.Column("state_ts", sa.Float),
        sa.Column("first_seen", sa.Float),
        sa.Column("last_seen", sa.Float),
        sa.Column("desired_model", sa.String(128)),
        sa.Column("desired_version", sa.String(64)),
        sa.Column("desired_shadow", sa.String(64)),
        sa.Column("desired_rollout", sa.String(160)),
        sa.Column("desired_at", sa.Float),
    )
    telemetry = sa.Table(
        f"{p}telemetry",
        meta,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("model", sa.String(128)),
        sa.Column("version", sa.String(64)),
        sa.Column("window_start", sa.Float),
        sa.Column("window_end", sa.Float, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("requests", sa.Integer, nullable=False, default=0),
        sa.Column("errors", sa.Integer, nullable=False, default=0),
        sa.Column("p95_ms", sa.Float),
        sa.Column("psi_max", sa.Float),
        sa.Column("drift", sa.Boolean, nullable=False, default=False),
        sa.Column("dropped", sa.Integer, nullable=False, default=0),
        sa.Column("body", sa.Text, nullable=False),  # the telemetry message as received (JSON)
        sa.UniqueConstraint("device_id", "seq", name=f"{p}telemetry_device_seq"),
        sa.Index(f"{p}telemetry_mv_end", "model", "version", "window_end"),
    )
    events = sa.Table(
        f"{p}events",
        meta,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("from_state", sa.String(32)),
        sa.Column("to_state", sa.String(32)),
        sa.Column("model", sa.String(128)),
        sa.Column("version", sa.String(64)),
        sa.Column("reason", sa.Text),
        sa.UniqueConstraint("device_id", "seq", name=f"{p}events_device_seq"),
        sa.Index(f"{p}events_mv", "model", "version", "ts"),
    )
    rollouts = sa.Table(
        f"{p}rollouts",
        meta,
        sa.Column("id", sa.String(160), primary_key=True),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    commands = sa.Table(
        f"{p}commands",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rollout_id", sa.String(160), nullable=False),
        sa.Column("command", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("applied_at", sa.Float),
        sa.Column("result", sa.Text),
    )
    alerts = sa.Table(
        f"{p}alerts",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128)),
        sa.Column("version", sa.String(64)),
        sa.Column("value", sa.Float),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("actions", sa.Text),
    )
    kv = sa.Table(
        f"{p}meta",
        meta,
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.Text),
    )
    return {
        "devices": devices,
        "telemetry": telemetry,
        "events": events,
        "rollouts": rollouts,
        "commands": commands,
        "alerts": alerts,
        "meta": kv,
    }


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


class Store:
    """The fleet store at a SQLAlchemy URL. Creates its tables when missing.

    Raises FleetError when the database cannot be opened.
    """

    def __init__(self, url: str, prefix: str = "", echo: bool = False) -> None:
        self.url = url
        self.prefix = prefix
        try:
            sa_url = sa.engine.make_url(url)
        except sa.exc.ArgumentError as exc:
            raise FleetError(
                f"store URL {url!r} is not a database URL",
                hint="use sqlite:///path/fleet.db or postgresql+psycopg://user:pass@host/db",
            ) from exc
        self.dialect = sa_url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise FleetError(f"store URL {url!r}: {self.dialect} is not supported", hint="use SQLite or PostgreSQL")
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if sa_url.database and sa_url.database != ":memory:":
                from pathlib import Path

                Path(sa_url.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["pool_size"] = 4
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self.meta = sa.MetaData()
        self.t = _tables(self.meta, prefix)
        self._lock = threading.Lock()
        try:
            self.meta.create_all(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise FleetError(
                f"cannot open the fleet store at {sa_url.render_as_string(hide_password=True)}: "
                f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}",
                hint="check the URL, that the server runs and that the user may create tables",
            ) from exc

    # plumbing ----------------------------------------------------------------------------------
    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction; database errors become FleetError."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise FleetError(
                f"fleet store error: {exc.__class__.__name__}: {str(exc).splitlines()[0]}",
                hint="check that the database is reachable; nothing was written in this transaction",
            ) from exc

    def close(self) -> None:
        self.engine.dispose()

    def drop_all(self) -> None:
        """Remove this store's tables (tests, or a fresh start)."""
        self.meta.drop_all(self.engine)

    # ingestion ---------------------------------------------------------------------------------
    def write_batch(
        self,
        states: Sequence[dict[str, Any]] = (),
        telemetry: Sequence[dict[str, Any]] = (),
        events: Sequence[dict[str, Any]] = (),
        seen: dict[str, float] | None = None,
    ) -> tuple[int, int]:
        """Write one collector batch in one transaction. ``states`` are ReportedState dicts with a
        ``received_at``; ``telemetry``/``events`` rows as produced by the collector; ``seen`` maps
        device ids to their last message time. Returns (telemetry rows inserted, events inserted);
        rows whose (device_id, seq) already exists are dropped."""
        t_ins = e_ins = 0
        with self.begin() as conn:
            if seen:
                self._touch(conn, seen)
            for state in states:
                self._apply_state(conn, state)
            if telemetry:
                t_ins = self._insert_many(conn, "telemetry", TELEMETRY_COLUMNS, telemetry)
            if events:
                e_ins = self._insert_many(conn, "events", EVENT_COLUMNS, events)
        return t_ins, e_ins

    def _insert_many(self, conn: Connection, table: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> int:
        """``INSERT ... ON CONFLICT (device_id, seq) DO NOTHING`` through the driver's executemany
        (psycopg pipelines it; several times faster than a compiled multi-row statement here).
        Returns the rows inserted."""
        ph = "?" if self.dialect == "sqlite" else "%s"
        sql = (
            f"INSERT INTO {self.t[table].name} ({', '.join(columns)}) VALUES ({', '.join([ph] * len(columns))}) "
            "ON CONFLICT (device_id, seq) DO NOTHING"
        )
        res = conn.exec_driver_sql(sql, [tuple(r.get(c) for c in columns) for r in rows])
        return max(0, int(res.rowcount))

    def _touch(self, conn: Connection, seen: dict[str, float]) -> None:
        d = self.t["devices"]
        stmt = self._insert(d)
        stmt = stmt.on_conflict_do_update(
            index_elements=["device_id"],
            set_={"last_seen": sa.func.max(sa.func.coalesce(d.c.last_seen, 0.0), stmt.excluded.last_seen)}
            if self.dialect == "sqlite"
            else {"last_seen": sa.func.greatest(d.c.last_seen, stmt.excluded.last_seen)},
        )
        conn.execute(
            stmt,
            [{"device_id": k, "last_seen": v, "first_seen": v, "online": False} for k, v in sorted(seen.items())],
        )

    def _apply_state(self, conn: Connection, state: dict[str, Any]) -> None:
        d = self.t["devices"]
        now = float(state.get("received_at") or time.time())
        device_id = state["device_id"]
        online = bool(state.get("online", True))
        row: dict[str, Any] = {"device_id": device_id, "online": online, "last_seen": now}
        # a last will carries little more than online=false: keep what we knew
        if online or state.get("version") is not None:
            row.update({k: state.get(k) for k in STATE_FIELDS})
            row["group_name"] = state.get("group")
            row["state_ts"] = state.get("ts")
        stmt = self._insert(d).values(first_seen=now, **row)
        stmt = stmt.on_conflict_do_update(index_elements=["device_id"], set_={k: v for k, v in row.items()})
        conn.execute(stmt)

    # devices -----------------------------------------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        """Every known device as a dict (the columns of the devices table), ordered by id."""
        with self.begin() as conn:
            rows = conn.execute(sa.select(self.t["devices"]).order_by(self.t["devices"].c.device_id)).mappings().all()
        return [dict(r) for r in rows]

    def device(self, device_id: str) -> dict[str, Any] | None:
        d = self.t["devices"]
        with self.begin() as conn:
            row = conn.execute(sa.select(d).where(d.c.device_id == device_id)).mappings().first()
        return dict(row) if row else None

    def device_views(self) -> list[DeviceView]:
        return [
            DeviceView(
                r["device_id"],
                bool(r["online"]),
                r["model"],
                r["version"],
                r["previous_version"],
                r["update_state"] or "idle",
                r["group_name"],
            )
            for r in self.devices()
            if r["state_ts"] is not None or r["version"] is not None or r["update_state"] is not None
        ]

    def set_desired(self, rows: Iterable[dict[str, Any]]) -> None:
        """Record what was published as each device's desired state (keys: device_id, model,
        version, shadow, rollout, at)."""
        d = self.t["devices"]
        rows = list(rows)
        if not rows:
            return
        with self.begin() as conn:
            for r in rows:
                conn.execute(
                    sa.update(d)
                    .where(d.c.device_id == r["device_id"])
                    .values(
                        desired_model=r["model"],
                        desired_version=r["version"],
                        desired_shadow=r.get("shadow"),
                        desired_rollout=r.get("rollout"),
                        desired_at=r["at"],
                    )
                )

    # telemetry and events ----------------------------------------------------------------------
    def telemetry_rows(
        self,
        model: str | None = None,
        version: str | None = None,
        since: float | None = None,
        after_id: int = 0,
        device_id: str | None = None,
        limit: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Telemetry rows (ascending id), filtered. ``body`` is the telemetry message's JSON text."""
        tt = self.t["telemetry"]
        cols = [tt.c[c] for c in columns] if columns else [tt]
        q = sa.select(*cols).where(tt.c.id > after_id)
        if model is not None:
            q = q.where(tt.c.model == model)
        if version is not None:
            q = q.where(tt.c.version == version)
        if since is not None:
            q = q.where(tt.c.window_end >= since)
        if device_id is not None:
            q = q.where(tt.c.device_id == device_id)
        q = q.order_by(tt.c.id)
        if limit:
            q = q.limit(limit)
        with self.begin() as conn:
            return [dict(r) for r in conn.execute(q).mappings().all()]

    def latest_telemetry(self, since: float) -> dict[str, dict[str, Any]]:
        """Per device: its newest window that ended after ``since`` (p95_ms, psi_max, drift, version)."""
        tt = self.t["telemetry"]
        newest = (
            sa.select(sa.func.max(tt.c.id)).where(tt.c.window_end >= since).group_by(tt.c.device_id).scalar_subquery()
        )
        q = sa.select(tt.c.device_id, tt.c.version, tt.c.p95_ms, tt.c.psi_max, tt.c.drift, tt.c.window_end).where(
            tt.c.id.in_(newest)
        )
        with self.begin() as conn:
            return {r["device_id"]: dict(r) for r in conn.execute(q).mappings().all()}

    def telemetry_count(self) -> int:
        with self.begin() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.t["telemetry"])).scalar_one())

    def events(
        self,
        limit: int = 100,
        device_id: str | None = None,
        model: str | None = None,
        version: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """Events, newest first."""
        e = self.t["events"]
        q = sa.select(e)
        if device_id is not None:
            q = q.where(e.c.device_id == device_id)
        if model is not None:
            q = q.where(e.c.model == model)
        if version is not None:
            q = q.where(e.c.version == version)
        if since is not None:
            q = q.where(e.c.ts >= since)
        q = q.order_by(e.c.ts.desc(), e.c.id.desc()).limit(limit)
        with self.begin() as conn:
            return [dict(r) for r in conn.execute(q).mappings().all()]

    # rollouts ----------------------------------------------------------------------------------
    def create_rollout(self, rollout: Rollout) -> Rollout:
        """Insert a new rollout. Raises FleetError when the model already has an active rollout."""
        r = self.t["rollouts"]
        with self._lock, self.begin() as conn:
            active = conn.execute(
                sa.select(r.c.id).where(r.c.model == rollout.model, r.c.state.in_(ACTIVE))
            ).first()
            if active:
                raise FleetError(
                    f"{rollout.model} already has an active rollout ({active[0]})",
                    hint=f"finish it, or `edgeml rollout abort {active[0]}`, before starting another",
                )
            conn.execute(sa.insert(r).values(**self._rollout_row(rollout)))
        return rollout

    def save_rollout(self, rollout: Rollout) -> None:
        r = self.t["rollouts"]
        row = self._rollout_row(rollout)
        with self.begin() as conn:
            conn.execute(sa.update(r).where(r.c.id == rollout.id).values(**row))

    @staticmethod
    def _rollout_row(rollout: Rollout) -> dict[str, Any]:
        return {
            "id": rollout.id,
            "model": rollout.model,
            "version": rollout.version,
            "state": rollout.state,
            "created_at": rollout.created_at,
            "updated_at": rollout.updated_at,
            "body": json.dumps(rollout.to_dict(), sort_keys=True, allow_nan=False),
        }

    def rollouts(self, model: str | None = None, states: Sequence[str] | None = None) -> list[Rollout]:
        """Rollouts, newest first."""
        r = self.t["rollouts"]
        q = sa.select(r.c.body)
        if model is not None:
            q = q.where(r.c.model == model)
        if states:
            q = q.where(r.c.state.in_(list(states)))
        q = q.order_by(r.c.created_at.desc())
        with self.begin() as conn:
            return [Rollout.from_dict(json.loads(b)) for (b,) in conn.execute(q).all()]

    def rollout(self, rollout_id: str) -> Rollout | None:
        r = self.t["rollouts"]
        with self.begin() as conn:
            row = conn.execute(sa.select(r.c.body).where(r.c.id == rollout_id)).first()
        return Rollout.from_dict(json.loads(row[0])) if row else None

    def find_rollout(self, ref: str) -> Rollout:
        """A rollout by id, or the newest rollout of a model name. Raises FleetError when none matches."""
        found = self.rollout(ref)
        if found:
            return found
        by_model = self.rollouts(model=ref)
        if by_model:
            return by_model[0]
        raise FleetError(f"no rollout {ref!r}", hint="`edgeml rollout status` lists rollouts and their ids")

    # operator commands -------------------------------------------------------------------------
    def add_command(self, rollout_id: str, command: str, now: float | None = None) -> int:
        c = self.t["commands"]
        with self.begin() as conn:
            res = conn.execute(
                sa.insert(c).values(rollout_id=rollout_id, command=command, created_at=now or time.time())
            )
            key = res.inserted_primary_key
            assert key is not None
            return int(key[0])

    def pending_commands(self) -> list[dict[str, Any]]:
        c = self.t["commands"]
        with self.begin() as conn:
            rows = conn.execute(sa.select(c).where(c.c.applied_at.is_(None)).order_by(c.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def command(self, command_id: int) -> dict[str, Any] | None:
        c = self.t["commands"]
        with self.begin() as conn:
            row = conn.execute(sa.select(c).where(c.c.id == command_id)).mappings().first()
        return dict(row) if row else None

    def mark_command(self, command_id: int, result: str, now: float | None = None) -> None:
        c = self.t["commands"]
        with self.begin() as conn:
            conn.execute(sa.update(c).where(c.c.id == command_id).values(applied_at=now or time.time(), result=result))

    # alerts and meta ---------------------------------------------------------------------------
    def add_alert(
        self, rule: str, message: str, model: str | None = None, version: str | None = None,
        value: float | None = None, actions: Sequence[str] = (), now: float | None = None,
    ) -> None:
        with self.begin() as conn:
            conn.execute(
                sa.insert(self.t["alerts"]).values(
                    ts=now or time.time(), rule=rule, model=model, version=version, value=value,
                    message=message, actions=",".join(actions),
                )
            )

    def alerts(self, limit: int = 100) -> list[dict[str, Any]]:
        a = self.t["alerts"]
        with self.begin() as conn:
            return [dict(r) for r in conn.execute(sa.select(a).order_by(a.c.id.desc()).limit(limit)).mappings().all()]

    def get_meta(self, key: str) -> Optional[str]:
        m = self.t["meta"]
        with self.begin() as conn:
            row = conn.execute(sa.select(m.c.value).where(m.c.key == key)).first()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        m = self.t["meta"]
        stmt = self._insert(m).values(key=key, value=value)
        stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value})
        with self.begin() as conn:
            conn.execute(stmt)
