"""The history store: its schema versions (a database of cauce 0.1.0 opens and is migrated,
several processes may open a new one at once) and exact job-id prefixes; on SQLite, and on a real
PostgreSQL server (``postgres_fixtures``) where the behaviour is the database's."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cauce.errors import HistoryError
from cauce.history import HistoryStore, JobStatus, MetricRow, TaskStatus
from cauce.history.migrations import HEAD, VERSION_TABLE

#: ``history.db`` as cauce 0.1.0 left it (no version table), with an Optuna study beside it:
#: made by 0.1.0's ``HistoryStore`` and ``optuna.create_study``, then ``iterdump()``.
RELEASE_0_1_0 = Path(__file__).parent / "data" / "history_cauce_0_1_0.sql"


def database_of_0_1_0(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        conn.executescript(RELEASE_0_1_0.read_text(encoding="utf-8"))
    conn.close()
    return f"sqlite:///{path}"


def version(path: Path, table: str = VERSION_TABLE) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = [row[0] for row in conn.execute(f"SELECT version_num FROM {table}")]
    conn.close()
    return rows


def schema(url: str) -> dict[str, Any]:
    """cauce's tables as the database describes them: columns, keys and indexes."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        return {
            table: (
                [
                    (
                        c["name"],
                        str(c["type"]),
                        c["nullable"],
                        c.get("primary_key"),
                    )  # not on PostgreSQL
                    for c in inspector.get_columns(table)
                ],
                inspector.get_pk_constraint(table)["constrained_columns"],
                [
                    (f["constrained_columns"], f["referred_table"])
                    for f in inspector.get_foreign_keys(table)
                ],
                sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)),
            )
            for table in ("jobs", "tasks", "events", "metrics")
        }
    finally:
        engine.dispose()


def test_a_database_of_0_1_0_is_stamped_and_its_rows_kept(tmp_path: Path) -> None:
    url = database_of_0_1_0(tmp_path / "history.db")
    store = HistoryStore(url)
    try:
        assert version(tmp_path / "history.db") == [HEAD]
        assert version(tmp_path / "history.db", "alembic_version") == ["v3.2.0.a"]  # Optuna's
        jobs = store.list_jobs()
        assert [job.id for job in jobs] == [
            "hello-20260101-130000-cd34",
            "hello-20260101-120000-ab12",
        ]
        job = store.get_job("hello-20260101-12")
        assert (job.status, job.framework, job.attempts, job.restarts) == (
            JobStatus.SUCCEEDED,
            "pytorch",
            2,
            1,
        )
        assert jobs[0].status is JobStatus.FAILED and "exit 3" in (jobs[0].root_cause or "")
        tasks = store.get_tasks(job.id)
        assert [(t.attempt, t.status, t.exit_code, t.port) for t in tasks] == [
            (0, TaskStatus.STOPPED, -15, 29500),
            (1, TaskStatus.SUCCEEDED, 0, 29501),
        ]
        [event] = store.get_events(job.id)
        assert (event.kind, event.data) == (
            "restart",
            {"restart": 1, "cause": "worker-0 failed first"},
        )
        [metric] = store.get_metrics(job.id)
        assert (metric.step, metric.name, metric.value) == (10, "loss", 0.25)
        store.create_job(id="new", name="new", status=JobStatus.PENDING)
        assert store.get_job("new").status is JobStatus.PENDING
        # Revision 0002: the migrated metrics table holds a NaN beside the old row.
        store.add_metrics(job.id, [MetricRow("worker-0", 1, 11, 1.0, "loss", math.nan)])
        old, nan = store.get_metrics(job.id)
        assert (old.step, old.value, nan.step, math.isnan(nan.value)) == (10, 0.25, 11, True)
    finally:
        store.close()
    HistoryStore(url).close()  # opened again: already current
    assert version(tmp_path / "history.db") == [HEAD]
    with sqlite3.connect(tmp_path / "history.db") as conn:
        assert list(conn.execute("SELECT study_name FROM studies")) == [("hello",)]
    conn.close()


def test_a_new_database_has_the_schema_of_a_migrated_one(tmp_path: Path) -> None:
    """A new store and one of 0.1.0 migrated to HEAD have the same tables; the migration
    changed only what its revisions say (0002: metrics.value nullable, metrics.nonfinite; 0003:
    jobs.seen_at)."""
    old = database_of_0_1_0(tmp_path / "old.db")
    before = schema(old)
    new = f"sqlite:///{tmp_path / 'new.db'}"
    HistoryStore(new).close()
    HistoryStore(old).close()
    assert version(tmp_path / "new.db") == version(tmp_path / "old.db") == [HEAD]
    after = schema(new)
    assert schema(old) == after
    assert {t: v for t, v in after.items() if t not in ("metrics", "jobs")} == {
        t: v for t, v in before.items() if t not in ("metrics", "jobs")
    }
    assert after["jobs"][1:] == before["jobs"][1:]
    assert after["jobs"][0] == [*before["jobs"][0], ("seen_at", "FLOAT", True, False)]
    assert after["metrics"][1:] == before["metrics"][1:]  # keys and indexes
    was, now = before["metrics"][0], after["metrics"][0]
    assert [c for c in was if c not in now] == [("value", "FLOAT", False, False)]
    assert [c for c in now if c not in was] == [
        ("value", "FLOAT", True, False),
        ("nonfinite", "VARCHAR(4)", True, False),
    ]


def test_head_is_the_newest_migration() -> None:
    from alembic.script import ScriptDirectory

    from cauce.history import migrations

    scripts = ScriptDirectory(str(Path(migrations.__file__).parent))
    assert scripts.get_heads() == [HEAD]


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for a new history database: a file, or a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    return str(request.getfixturevalue("postgres_url"))


def select(url: str, statement: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(statement))]
    finally:
        engine.dispose()


def test_processes_opening_a_new_database_at_once_all_succeed(history_url: str) -> None:
    """The history's tables and the studies' (Optuna's, which it makes itself): two tuners that
    open a new PostgreSQL database at once made Optuna's types twice, and one failed."""
    url = history_url
    code = (
        "import sys; from cauce.history import HistoryStore; from cauce.tune._optuna import "
        "open_storage; HistoryStore(sys.argv[1]).close(); open_storage(sys.argv[1])"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert select(url, f"SELECT version_num FROM {VERSION_TABLE}") == [(HEAD,)]


def test_job_id_prefixes_are_exact(history_url: str) -> None:
    store = HistoryStore(history_url)
    try:
        for job_id in ("ab_c-1", "abxc-2", "Zed-3"):
            store.create_job(id=job_id, name=job_id, status=JobStatus.SUCCEEDED)
        # LIKE would read "_" and "%" as wildcards (and, on SQLite, ignore case).
        assert store.get_job("ab_").id == "ab_c-1"
        assert store.get_job("abx").id == "abxc-2"
        for missing in ("%", "a%", "_b", "zed"):
            with pytest.raises(HistoryError, match="no job"):
                store.get_job(missing)
        with pytest.raises(HistoryError, match="ambiguous: ab_c-1, abxc-2"):
            store.get_job("ab")
    finally:
        store.close()


def test_nan_and_infinite_metrics_are_stored_as_null_and_read_back(history_url: str) -> None:
    """SQL has no NaN (SQLite reads it as NULL): a value that is not finite is stored as NULL
    with the word for it, and read back as that float, in the order reported."""
    store = HistoryStore(history_url)
    try:
        store.create_job(id="j-1", name="j", status=JobStatus.RUNNING)
        values = [1.0, math.nan, math.inf, -math.inf, 0.5]
        rows = [MetricRow("worker-0", 0, step, 0.0, "loss", v) for step, v in enumerate(values)]
        store.add_metrics("j-1", rows)
        back = [m.value for m in store.get_metrics("j-1")]
        assert math.isnan(back[1]) and [back[0], *back[2:]] == [1.0, math.inf, -math.inf, 0.5]
        stored = select(history_url, "SELECT value, nonfinite FROM metrics ORDER BY id")
        assert stored == [(1.0, None), (None, "nan"), (None, "inf"), (None, "-inf"), (0.5, None)]
    finally:
        store.close()


def database_of_0_1_0_on_postgres(old: str, url: str) -> None:
    """What 0.1.0 left on PostgreSQL: revision 0001's tables without a version table, holding
    the rows of the 0.1.0 database ``old`` (its sequences past their ids, as inserts leave them)."""
    from alembic import command
    from alembic.config import Config

    from cauce.history import migrations

    tables = ("jobs", "tasks", "events", "metrics")
    engine, source = sa.create_engine(url), sa.create_engine(old)
    try:
        with engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", str(Path(migrations.__file__).parent))
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
            conn.execute(sa.text(f"DROP TABLE {VERSION_TABLE}"))
        meta = sa.MetaData()
        meta.reflect(engine, only=tables)
        with source.connect() as read, engine.begin() as write:
            for table in tables:
                found = [dict(row._mapping) for row in read.execute(meta.tables[table].select())]
                if found:
                    write.execute(meta.tables[table].insert(), found)
            for table in ("events", "metrics"):
                write.execute(
                    sa.text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
                    )
                )
    finally:
        engine.dispose()
        source.dispose()


def test_a_postgres_database_of_0_1_0_is_migrated_keeps_its_rows_and_matches_a_new_one(
    tmp_path: Path, postgres: Any
) -> None:
    """Revision 0002 on PostgreSQL (a column made nullable, one added, in one transaction under
    the advisory lock), on the rows of the 0.1.0 database; a new store has the same schema."""
    old = database_of_0_1_0(tmp_path / "history.db")
    with postgres.database() as migrated, postgres.database() as new:
        database_of_0_1_0_on_postgres(old, migrated)
        store = HistoryStore(migrated)
        try:
            assert select(migrated, f"SELECT version_num FROM {VERSION_TABLE}") == [(HEAD,)]
            assert [job.id for job in store.list_jobs()] == [
                "hello-20260101-130000-cd34",
                "hello-20260101-120000-ab12",
            ]
            job = store.get_job("hello-20260101-12")
            assert (job.status, job.attempts, job.restarts) == (JobStatus.SUCCEEDED, 2, 1)
            [event] = store.get_events(job.id)
            assert event.data == {"restart": 1, "cause": "worker-0 failed first"}
            store.add_metrics(job.id, [MetricRow("worker-0", 1, 11, 1.0, "loss", math.nan)])
            was, nan = store.get_metrics(job.id)
            assert (was.step, was.value, nan.step, math.isnan(nan.value)) == (10, 0.25, 11, True)
        finally:
            store.close()
        HistoryStore(new).close()
        assert schema(migrated) == schema(new)


def test_the_heartbeat_goes_on_while_the_driver_is_blocked(
    history_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver blocked in one call (a cluster starting an application for minutes) still says
    that it lives: the heartbeat is a thread's, not the driver loop's, and stops with the block."""
    import time

    from cauce.gang._record import JobRecord
    from cauce.spec import parse_job

    monkeypatch.setenv("CAUCE_LOST_AFTER", "1.2")  # a heartbeat every 0.2 s
    store = HistoryStore(history_url)
    try:
        spec = parse_job({"name": "blocked", "command": "true", "roles": {"worker": {}}})
        record = JobRecord(store, "blocked-1")
        record.submitted(spec, kind="run", cluster="local", run_dir="/tmp/x", tasks=1)
        seen = []
        with record.beating():
            for _ in range(6):
                time.sleep(0.25)  # the main thread writes nothing meanwhile
                seen.append(store.get_job("blocked-1").seen_at)
        assert len(set(seen)) >= 4, seen  # it kept moving
        last = store.get_job("blocked-1").seen_at
        time.sleep(0.6)
        assert store.get_job("blocked-1").seen_at == last  # and stopped with the block
    finally:
        store.close()
