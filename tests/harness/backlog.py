"""A queue.db with a backlog of n rows, written the way store/store.c lays it
out, in a second or two (inside SQLite, not row by row from Python): for tests
and benchmarks that need the daemon to start with a big backlog."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import List, Sequence

from .util import REPO_ROOT, HarnessError

BACKLOG_BASE = 100_000_000  # row k has the value BASE + k
FRAGMENT = "c8y_Counter"    # harness.accounting's counter sensors
UNIT = "n"


def daemon_schema() -> str:
    """The CREATE TABLE statements of store/store.c, as the daemon runs them."""
    src = (REPO_ROOT / "store" / "store.c").read_text()
    m = re.search(r'static const char schema\[\]\s*=\s*((?:\s*"(?:[^"\\]|\\.)*")+)\s*;', src)
    if not m:
        raise HarnessError("cannot find `static const char schema[]` in store/store.c")
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1)))


def sensor_names(n: int) -> List[str]:
    return [f"s{j:02d}" for j in range(n)]


def make_backlog(db: Path, n: int, names: Sequence[str], *, base: int = BACKLOG_BASE,
                 fragment: str = FRAGMENT, unit: str = UNIT) -> float:
    """queue.db with n rows: row k (seq k+1) belongs to sensor k % len(names)
    (fragment `fragment`, series = the sensor name) and has the value base + k;
    taken 1 ms apart, the last one now.  Returns the seconds it took."""
    t0 = time.monotonic()
    db = Path(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    for sfx in ("", "-wal", "-shm"):
        Path(f"{db}{sfx}").unlink(missing_ok=True)
    con = sqlite3.connect(str(db))
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=OFF")
        con.executescript(daemon_schema())
        con.executemany("INSERT INTO sensors(id, name, fragment, series, unit) "
                        "VALUES(?, ?, ?, ?, ?)",
                        [(j + 1, s, fragment, s, unit) for j, s in enumerate(names)])
        now_ms = int(time.time() * 1000)
        con.execute("WITH RECURSIVE c(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM c "
                    "WHERE k + 1 < ?) INSERT INTO samples(seq, sensor, value, time_ms) "
                    "SELECT k + 1, k % ? + 1, CAST(? + k AS REAL), ? - ? + k FROM c",
                    (n, len(names), base, now_ms, n))
        con.commit()
        got = con.execute("SELECT count(*), max(seq) FROM samples").fetchone()
        seq = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'samples'").fetchone()
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    if got != (n, n) or not seq or seq[0] != n:
        raise HarnessError(f"generated queue.db is wrong: {got}, sqlite_sequence {seq}")
    return time.monotonic() - t0
