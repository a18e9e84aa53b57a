"""The inference log's journal in a real directory: segments in order, owned through a real
flock, and adopted once the writer that owns them has ended."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.inference_log.journal import Journal
from modelport.inference_log.record import LogRecord, Row, encode_record


def rows(prefix: str, count: int) -> list[Row]:
    return [
        encode_record(
            LogRecord(f"{prefix}-{i}", 0.0, "iris", 1, "", "rest", "", None, None, 1.0, "200", "")
        )
        for i in range(count)
    ]


def deliver(journal: Journal) -> list[str]:
    """The request ids of every journaled row, oldest first; the segments are removed."""
    names: list[str] = []
    while (segment := journal.oldest()) is not None:
        found, bad = journal.read(segment)
        assert bad == []
        names += [row["request_id"] for row in found]
        journal.remove(segment)
    return names


@pytest.fixture
def journals(tmp_path: Path) -> Iterator[list[Journal]]:
    """Journals the test makes, closed afterwards so that their locks are released."""
    made: list[Journal] = []
    yield made
    for journal in made:
        journal.close()


def started(journals: list[Journal], directory: Path, batch_rows: int) -> Journal:
    journal = Journal(directory, batch_rows)
    journal.begin()
    journal.lock()
    journals.append(journal)
    return journal


def test_rows_fill_segments_of_batch_rows_and_come_back_in_order(tmp_path: Path) -> None:
    journal = Journal(tmp_path, batch_rows=4)
    journal.begin()
    assert (journal.waiting, journal.room()) == (False, 4)
    journal.append(rows("a", 3))
    assert journal.room() == 1
    journal.append(rows("b", 1))
    assert journal.room() == 4
    journal.append(rows("c", 2))
    assert (journal.waiting, journal.rows) == (True, 6)
    assert len(list(tmp_path.glob("journal-*.jsonl"))) == 2

    assert deliver(journal) == ["a-0", "a-1", "a-2", "b-0", "c-0", "c-1"]
    assert not journal.waiting
    journal.close()
    # Nothing waits, so the lock file goes too.
    assert list(tmp_path.iterdir()) == []


def test_a_torn_line_is_reported_and_keep_rewrites_the_segment(tmp_path: Path) -> None:
    journal = Journal(tmp_path, batch_rows=10)
    journal.begin()
    journal.append(rows("a", 3))
    segment = journal.oldest()
    assert segment is not None
    with segment.path.open("ab") as torn:
        torn.write(b'{"request_id":"torn","at":')

    found, bad = journal.read(segment)
    assert [row["request_id"] for row in found] == ["a-0", "a-1", "a-2"]
    assert bad == [b'{"request_id":"torn","at":']
    assert journal.keep(segment, found[1:]) == 1
    assert journal.read(segment) == (found[1:], [])
    assert journal.rows == 2
    journal.close()


def test_only_the_segments_of_ended_writers_are_adopted(
    tmp_path: Path, journals: list[Journal]
) -> None:
    live = started(journals, tmp_path, batch_rows=2)
    live.append(rows("live", 1))
    ended = Journal(tmp_path, batch_rows=2)
    ended.begin()
    ended.lock()
    for chunk in ("x", "y", "z"):
        ended.append(rows(chunk, 2))
    ended.close()  # as its process ending would: the lock is free, the files stay
    assert len(list(tmp_path.glob("journal-*.lock"))) == 2

    adopter = started(journals, tmp_path, batch_rows=2)
    assert adopter.adopt() == 6
    assert deliver(adopter) == ["x-0", "x-1", "y-0", "y-1", "z-0", "z-1"]
    assert live.rows == 1
    assert len(list(tmp_path.glob("journal-*.jsonl"))) == 1
    # The ended writer's lock file is gone; the live writer's and the adopter's stay.
    assert len(list(tmp_path.glob("journal-*.lock"))) == 2
    assert started(journals, tmp_path, batch_rows=2).adopt() == 0


def test_files_whose_lock_is_gone_are_adopted_and_empty_ones_removed(
    tmp_path: Path, journals: list[Journal]
) -> None:
    orphan = Journal(tmp_path, batch_rows=5)
    orphan.begin()
    orphan.append(rows("orphan", 2))
    orphan.close()
    (lock,) = tmp_path.glob("journal-*.lock")
    lock.unlink()
    empty = tmp_path / "journal-1-abcdef-000000001.jsonl"
    empty.write_bytes(b"\n")
    (tmp_path / "journal-2-abcdef.lock").write_bytes(b"")  # an ended writer that left no rows

    adopter = started(journals, tmp_path, batch_rows=5)
    assert adopter.adopt() == 2
    assert deliver(adopter) == ["orphan-0", "orphan-1"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        next(tmp_path.glob("journal-*.lock")).name
    ]
