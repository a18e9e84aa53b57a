"""The SQLite store: one WAL file that several processes write, and that may be moved away."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelport.errors import NotReady
from modelport.inference_log.location import open_store
from modelport.inference_log.record import LogRecord, Row, encode_record
from modelport.inference_log.store import RowsRejected


def row(request_id: str) -> Row:
    return encode_record(
        LogRecord(request_id, 0.0, "iris", 1, "", "rest", "", None, None, 1.0, "200", "")
    )


def test_several_processes_write_one_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    script = textwrap.dedent(
        """
        import sys
        from modelport.inference_log.location import open_store
        from modelport.inference_log.record import LogRecord, encode_record
        store = open_store(sys.argv[1])
        name = sys.argv[2]
        for batch in range(20):
            store.write([
                encode_record(LogRecord(f"{name}-{batch}-{i}", 0.0, name, 1, "", "rest", "",
                                        None, None, 1.0, "200", ""))
                for i in range(50)
            ])
        store.close()
        """
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(path), f"w{n}"]) for n in range(3)
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0]
    with open_store(str(path)) as store:
        assert store.count() == 3000
        for n in range(3):
            names = [r.request_id for r in store.read(model=f"w{n}")]
            assert names == [f"w{n}-{b}-{i}" for b in range(20) for i in range(50)]
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_sqlite_store_waits_for_a_moved_file_to_come_back(tmp_path: Path) -> None:
    """A WAL file moved while open would lose its last rows to a new file at the path: calls
    fail instead until the file is back, and nothing is lost."""
    path = tmp_path / "inference.sqlite"
    with open_store(str(path)) as store:
        store.write([row("before")])
        os.rename(path, tmp_path / "moved.sqlite")
        with pytest.raises(NotReady, match="move it back"):
            store.write([row("refused")])
        assert not path.exists()
        os.rename(tmp_path / "moved.sqlite", path)
        store.write([row("after")])
        assert [r.request_id for r in store.read()] == ["before", "after"]


def test_sqlite_store_starts_a_new_file_when_the_old_one_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "inference.sqlite"
    with open_store(str(path)) as store:
        store.write([row("old")])
        for leftover in tmp_path.glob("inference.sqlite*"):
            leftover.unlink()
        store.write([row("new")])
        assert [r.request_id for r in store.read()] == ["new"]
    assert path.is_file()


def test_a_write_of_many_rows_is_one_transaction_in_order(tmp_path: Path) -> None:
    # More rows than one INSERT statement holds: several statements, one transaction.
    with open_store(str(tmp_path / "log.sqlite")) as store:
        store.write([row(f"r{i}") for i in range(250)])
        bad = [row(f"s{i}") for i in range(200)]
        bad[150]["latency_ms"] = None  # NOT NULL: the whole write is refused
        with pytest.raises(RowsRejected, match="NOT NULL"):
            store.write(bad)
        assert [r.request_id for r in store.read()] == [f"r{i}" for i in range(250)]
