#!/usr/bin/python3
"""ThingsBoard MQTT throughput: array packing vs one object per publish, in
the same run (`make bench`, or on its own).

The ThingsBoard emulator (tests/cloud/tb_plugin.c) and a generated backlog
of --rows rows (harness.backlog, 4 sensors, 1 ms apart: no two rows share a
timestamp, so no merging flatters the packed run).  The daemon runs with no
sensors and drains the backlog over MQTT (QoS 1, the max_inflight window):

  packed     the session limit getSessionLimits reports is 64 KiB (the
             platform's default): arrays of {ts, values} objects;
  per-object getSessionLimits says 100 bytes, which one object fits and two
             do not (the emulator still takes the client attributes):
             the same daemon, the same code path, one object per publish
             (the baseline).

Time from the daemon's start until every row arrived (each exactly once);
rows/s and the ratio packed / per-object.  A benchmark never fails for being
slow: the exit code is 1 only when a row was lost or duplicated.

    /usr/bin/python3 bench/tb_throughput.py [--rows N] [--keep]
Environment: EDGEBRIDGED (default build/edgebridged), TB_PLUGIN.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from bulk_drain import quiet_broker_conf  # noqa: E402
from harness import Env  # noqa: E402
from harness.backlog import BACKLOG_BASE, make_backlog, sensor_names  # noqa: E402
from harness.pki import Pki  # noqa: E402

GW = "gw-0001"


def drain(root: Path, pki: Pki, label: str, rows: int, session_limit: int) -> dict:
    env = Env(root / label, pki, cloud="tb",
              cloud_kw={"reported_max_payload": session_limit})
    try:
        quiet_broker_conf(env)
        env.start_broker()
        make_backlog(env.state_dir / "queue.db", rows, sensor_names(4))
        env.write_config(sensors={}, gateway={"log_level": "notice"})
        seen: collections.Counter = collections.Counter()
        publishes, off, sizes = 0, 0, 0
        t0 = time.monotonic()
        d = env.daemon()
        deadline = t0 + 600
        while len(seen) < rows and time.monotonic() < deadline and d.running:
            time.sleep(0.05)
            try:
                with open(env.tb.record_file, "rb") as f:
                    f.seek(off)
                    chunk = f.read()
            except FileNotFoundError:
                continue
            end = chunk.rfind(b"\n") + 1
            off += end
            for line in chunk[:end].splitlines():
                r = json.loads(line)
                if r.get("ev") != "telemetry":
                    continue
                publishes += 1
                sizes += r["size"]
                data = r["data"]
                for o in data if isinstance(data, list) else [data]:
                    for v in o["values"].values():
                        seen[int(v) - BACKLOG_BASE] += 1
        secs = time.monotonic() - t0
        d.stop()
        return {"label": label, "rows": rows, "arrived": len(seen),
                "duplicates": sum(c - 1 for c in seen.values()),
                "seconds": round(secs, 2), "rows_per_s": round(len(seen) / secs),
                "publishes": publishes,
                "bytes_per_publish": round(sizes / publishes) if publishes else 0}
    finally:
        env.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tb-bench-"))
    pki = Pki(root / "pki")
    try:
        packed = drain(root, pki, "packed", a.rows, 65536)
        single = drain(root, pki, "per-object", a.rows, 100)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("ThingsBoard MQTT backlog drain (same run):")
    for r in (packed, single):
        print(f"  {r['label']:<10} {r['arrived']}/{r['rows']} rows in {r['seconds']} s: "
              f"{r['rows_per_s']} rows/s, {r['publishes']} publishes, "
              f"{r['bytes_per_publish']} bytes each, {r['duplicates']} duplicates")
    if single["rows_per_s"]:
        print(f"  packed / per-object: {packed['rows_per_s'] / single['rows_per_s']:.1f}x")
    broken = [r["label"] for r in (packed, single)
              if r["arrived"] != r["rows"] or r["duplicates"]]
    if broken:
        print(f"bench: BROKEN: rows lost or duplicated in {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
