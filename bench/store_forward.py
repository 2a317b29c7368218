#!/usr/bin/python3
"""edgebridge store-and-forward benchmarks (`make bench`, after throughput.py).

Every figure is a RATIO to a baseline measured in the same run (the machines
are shared and noisy).  A benchmark never fails for being slow: the exit code
is non-zero only when something broke (a sample lost or duplicated, a row
left behind, the daemon crashed, stalled or exited uncleanly, a baseline
program failed).

  memory    a queue.db with a 1,000,000-row backlog is generated with the
            daemon's own schema (read from store/store.c) for 64 sensors;
            edgebridged then starts with those 64 sim counter sensors
            (interval 1 s) and the broker up, drains the backlog and runs on
            for --run-after seconds.  Peak RSS (VmHWM) and Private_Dirty
            (/proc/PID/smaps_rollup, the highest value sampled every 200 ms
            and the last one) against build/bench/bare_tls: libmosquitto +
            the pkcs11 engine + the same SoftHSM2 token and key, connected
            and idle (its VmHWM / Private_Dirty after a few idle seconds,
            median of --bare-repeat runs).  The drain time (daemon connected
            -> last backlog row at the observer) and its rate as a ratio to
            build/bench/raw_pub (libmosquitto, file key, QoS 1, one line per
            PUBLISH, window 1000).  Checks: every backlog row (value
            BASE + k) arrived exactly once and for its own sensor; live
            samples of each sensor arrived once each, a gap-free prefix (the
            unsent tail is still in queue.db after the stop); no backlog row
            is left in queue.db.
  growth    build/bench/store_growth: store_push/store_flush (batches of
            1000) and store_next/lease/ack/flush drain rates through
            store/store.h at 10k, 100k and 1M rows, as ratios to 10k
            (sizes below 300k rows repeated within a run and their median
            taken; then the median of --growth-repeat runs).
  idle      edgebridged connected, one sim sensor at 10 s, keepalive 60 s:
            wakeups over --idle-seconds from the stats line's counter
            (SIGUSR1 before and after, minus the one the second SIGUSR1
            causes), cross-checked with `strace -c -e trace=epoll_wait` when
            strace can attach.

With --throughput-json (written by `throughput.py --json`), the summary
block also holds the durable end-to-end throughput figures.

    /usr/bin/python3 bench/store_forward.py [--backlog N] [--run-after S]
        [--idle-seconds S] [--growth-repeat K] [--bare-repeat K]
        [--skip memory,growth,idle] [--throughput-json FILE] [--json FILE]
        [--keep] [-q]

Environment: EDGEBRIDGED, RAW_PUB, BARE_TLS, STORE_GROWTH (binaries, default
build/...), BENCH_DIR (keep everything there).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional, Tuple

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "tests"))

import throughput as tp  # noqa: E402  (QuietBroker, stats parsing, raw_pub, /proc)
from harness import Env, Observer, daemon_binary, expect  # noqa: E402
from harness.backlog import make_backlog, sensor_names  # noqa: E402
from harness.accounting import counter_sensors  # noqa: E402

BUILD = REPO / "build" / "bench"
RAW_PUB = tp.RAW_PUB
BARE_TLS = Path(os.environ.get("BARE_TLS") or BUILD / "bare_tls")
STORE_GROWTH = Path(os.environ.get("STORE_GROWTH") or BUILD / "store_growth")

from harness.backlog import BACKLOG_BASE, FRAGMENT, UNIT  # noqa: E402,F401
GROWTH_SIZES = (10_000, 100_000, 1_000_000)
GROWTH_MIN_ROWS = 300_000      # small sizes are repeated (median) up to this many rows
POLL = 0.2                     # seconds between samples of /proc and stats
POLL_DRAIN = 0.02              # ... of the stats while the backlog drains
STALL_AFTER = 20.0
DRAIN_TIMEOUT = 180.0

# targets (reported, never enforced)
TARGET_RATIO = 5.0
TARGET_RSS_OVER_BARE_MIB = 2.0
TARGET_PRIVATE_DIRTY_MIB = 4.0
TARGET_WAKEUPS_PER_S = 1.0

BenchFailure = tp.BenchFailure
log = tp.log
median = tp.median


def mib(kib: Optional[float]) -> float:
    return float("nan") if kib is None else kib / 1024.0


def verdict(ok: bool) -> str:
    return "target met" if ok else "TARGET MISSED"


# -- the daemon -------------------------------------------------------------------------

def wait_connected(env: Env, d, timeout: float = 60) -> Tuple[float, float]:
    """(seconds from start to "connected to", time.monotonic() then)."""
    rx = env.connected_re()
    t0 = time.monotonic()
    while True:
        if rx.search(d.output):
            now = time.monotonic()
            return now - t0, now
        if not d.running:
            raise BenchFailure(f"edgebridged exited with {d.returncode} before connecting:"
                               f"\n{d.output[-4000:]}")
        if time.monotonic() - t0 > timeout:
            raise BenchFailure(f"edgebridged did not connect within {timeout:.0f}s:"
                               f"\n{d.output[-4000:]}")
        time.sleep(0.005)


def stats_now(d, timeout: float = 5) -> dict:
    """SIGUSR1 and the stats line it answers with (throughput.STATS_RE)."""
    mark = d.mark()
    d.signal(signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while True:
        st = tp.last_stats(d.output[mark:])
        if st is not None:
            return st
        if not d.running:
            raise BenchFailure(f"edgebridged died (exit {d.returncode}):\n{d.output[-4000:]}")
        if time.monotonic() > deadline:
            raise BenchFailure(f"edgebridged did not answer SIGUSR1 within {timeout:.0f}s "
                               f"(loop stuck, or the stats line changed?):\n"
                               f"{d.output[-4000:]}")
        time.sleep(0.002)


def stop_daemon(d, problems: List[str]) -> str:
    rc = d.stop(timeout=15)
    out = d.output
    if rc != expect.EXIT_OK:
        problems.append(f"edgebridged stopped with exit code {rc}")
    problems += [f"daemon said: {m.group(0)}" for m in tp.PROBLEM_RE.finditer(out)]
    return out


class TimedObserver(Observer):
    """Keeps (arrival time, payload) per PUBLISH; lines are parsed after the
    run (a Python object per line would take CPU from the daemon)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.msgs: List[Tuple[float, bytes]] = []
        self.n200 = 0

    def _on_message(self, client, userdata, msg):
        now = time.monotonic()
        n = msg.payload.count(b"\n200,") + msg.payload.startswith(b"200,")
        with self._lock:
            self.msgs.append((now, msg.payload))
            self.n200 += n


# -- baselines ----------------------------------------------------------------------------

def run_bare(env: Env, i: int, settle: float, verbose: bool) -> Dict[str, int]:
    """bare_tls connected and idle: its memory after `settle` seconds."""
    b = env.broker
    cmd = [str(BARE_TLS), b.host, str(b.port), str(b.server_ca_file), str(env.cert_file),
           str(env.token.module), env.token.uri, str(env.pin_file), f"bare-tls-{i}"]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **env.token.env})
    try:
        deadline = time.monotonic() + 30
        line = ""
        while "bare_tls connected" not in line:
            left = deadline - time.monotonic()
            if left <= 0 or p.poll() is not None:
                p.kill()
                out, err = p.communicate(timeout=10)
                raise BenchFailure(f"bare_tls did not connect (exit {p.returncode}): "
                                   f"{' '.join(cmd)}\n{line}{out}\n{err}")
            r, _, _ = select.select([p.stdout], [], [], min(left, 0.5))
            if r:
                line = p.stdout.readline()
        time.sleep(settle)
        m = {"hwm": tp.proc_status_kib(p.pid, "VmHWM"),
             "rss": tp.proc_status_kib(p.pid, "VmRSS"),
             "pd": tp.smaps_rollup_kib(p.pid, "Private_Dirty")}
        maps = smaps_by_mapping(p.pid)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if p.returncode != 0 or any(v is None for v in m.values()):
        raise BenchFailure(f"bare_tls failed (exit {p.returncode}): {out}\n{err}")
    m["maps"] = maps  # type: ignore[assignment]
    if verbose:
        log(f"  bare_tls #{i + 1}: connected, idle {settle:.0f}s: VmHWM {m['hwm']} KiB, "
            f"VmRSS {m['rss']} KiB, Private_Dirty {m['pd']} KiB")
    return m


# -- 2. memory with 64 sensors and a 1M backlog ------------------------------------------

def smaps_by_mapping(pid: int) -> Dict[str, int]:
    """Rss (KiB) per mapped file ([heap], [anon], ... for the others)."""
    out: Dict[str, int] = {}
    cur = "[anon]"
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                parts = line.split()
                if parts and "-" in parts[0] and not parts[0].endswith(":"):
                    cur = os.path.basename(parts[5]) if len(parts) > 5 else "[anon]"
                elif parts and parts[0] == "Rss:":
                    out[cur] = out.get(cur, 0) + int(parts[1])
    except OSError:
        pass
    return out


def smaps_diff(daemon: Dict[str, int], bare: Dict[str, int]) -> List[Tuple[str, int]]:
    """Per mapping, daemon Rss - bare client Rss, largest first."""
    keys = set(daemon) | set(bare)
    diff = [(k, daemon.get(k, 0) - bare.get(k, 0)) for k in keys]
    return sorted((x for x in diff if x[1]), key=lambda x: -abs(x[1]))

class MemoryResult:
    def __init__(self):
        self.gen_s = 0.0
        self.db_mib = 0.0
        self.start_to_conn = 0.0
        self.drain_s = 0.0          # connected -> backlog acknowledged (refined)
        self.drain_from_start_s = 0.0
        self.drain_stats_s = 0.0    # connected -> first stats line saying drained
        self.drain_observer_s = 0.0  # connected -> last backlog row at the observer
        self.drain_end_from = "stats"
        self.maps: Dict[str, int] = {}  # Rss per mapping at the end
        # the live phase after the drain (64 sensors at 1 s): per second
        self.live_s = 0.0
        self.live_samples_s = 0.0
        self.live_publishes_s = 0.0
        self.live_write_kib_s: Optional[float] = None   # /proc/PID/io write_bytes
        self.live_wakeups_s = 0.0
        self.hwm_kib: Optional[int] = None
        self.pd_peak_kib: Optional[int] = None
        self.pd_end_kib: Optional[int] = None
        self.rss_end_kib: Optional[int] = None
        self.backlog_once = 0
        self.backlog_missing = 0
        self.backlog_dups = 0
        self.backlog_wrong_sensor = 0
        self.live_delivered = 0
        self.live_produced = 0
        self.live_dups = 0
        self.live_gaps = 0
        self.live_in_db_after = 0
        self.backlog_in_db_after = 0
        self.publishes = 0
        self.wakeups = 0
        self.cpu_s: Optional[float] = None
        self.ran_s = 0.0
        self.problems: List[str] = []


def proc_io(pid: int) -> Dict[str, int]:
    out: Dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k.strip()] = int(v)
    except (OSError, ValueError):
        pass
    return out


def run_memory(env: Env, n: int, n_sensors: int, run_after: float,
               verbose: bool) -> MemoryResult:
    res = MemoryResult()
    names = sensor_names(n_sensors)
    state = env.dir / "state-backlog"
    state.mkdir(exist_ok=True)
    db = state / "queue.db"
    res.gen_s = make_backlog(db, n, names)
    res.db_mib = db.stat().st_size / 2**20
    if verbose:
        log(f"  queue.db with {n:,} backlog rows for {n_sensors} sensors generated in "
            f"{res.gen_s:.1f}s ({res.db_mib:.1f} MiB)")
    cfg = env.write_config(env.dir / "backlog.conf",
                           sensors=counter_sensors(names, run=0, interval="1s"),
                           gateway={"state_dir": state},
                           cloud={"keepalive": "60s"},
                           store={"max_size": "1G", "sync": "normal"})
    obs = TimedObserver(env.broker, client_id="observer-backlog")
    env._observers.append(obs)  # noqa: SLF001 -- env.close() stops it too
    obs.start()
    d = env.daemon(cfg)
    t_start = time.monotonic()
    pd_peak = 0
    try:
        res.start_to_conn, t_conn = wait_connected(env, d)
        cpu0 = tp.proc_cpu_seconds(d.pid)
        last_acked, last_progress = -1, time.monotonic()
        t_end = None
        t_prev = t_drained = t_conn
        t_smaps = 0.0
        st: dict = {}
        live0 = None  # (time, stats, io) 2 s after the drain
        while True:
            now = time.monotonic()
            if now - t_smaps >= POLL:
                t_smaps = now
                pd = tp.smaps_rollup_kib(d.pid, "Private_Dirty")
                if pd is not None:
                    pd_peak = max(pd_peak, pd)
            st = stats_now(d)
            if st["acked"] > last_acked:
                last_acked, last_progress = st["acked"], now
            waiting = st["waiting"]
            # drained: the backlog's worth acknowledged and no more waiting
            # than a few rounds of the live sensors
            if t_end is None and st["acked"] >= n and waiting < 5 * n_sensors:
                t_drained = now
                t_end = now + run_after
                if verbose:
                    log(f"  backlog drained (stats: {st['acked']:,} acknowledged, "
                        f"{waiting} waiting) {now - t_conn:.2f}s after connecting; "
                        f"running on for {run_after:.0f}s")
            if t_end is None:
                t_prev = now
            elif live0 is None and now >= t_drained + 2.0:
                live0 = (now, st, proc_io(d.pid))
            if t_end is not None and now >= t_end:
                break
            if st["state"] != "connected" or st["connects"] != 1:
                raise BenchFailure(f"the daemon lost its connection: {st}")
            if now - last_progress > STALL_AFTER:
                raise BenchFailure(f"stall: acknowledged stuck at {st['acked']:,} for "
                                   f"{STALL_AFTER:.0f}s: {st}\n{d.output[-4000:]}")
            if now - t_conn > DRAIN_TIMEOUT + run_after:
                raise BenchFailure(f"backlog not drained after {DRAIN_TIMEOUT:.0f}s: {st}")
            time.sleep(max(0.0, now + (POLL if t_end else POLL_DRAIN) - time.monotonic()))
        res.maps = smaps_by_mapping(d.pid)
        if live0 is not None and time.monotonic() - live0[0] >= 3.0:
            t1, io1 = time.monotonic(), proc_io(d.pid)
            t0_, st0, io0 = live0
            res.live_s = t1 - t0_
            # the SIGUSR1s of this loop (POLL apart) are not the daemon's own
            n_sig = res.live_s / POLL
            res.live_samples_s = (st["acked"] - st0["acked"]) / res.live_s
            res.live_publishes_s = (st["publishes"] - st0["publishes"]) / res.live_s
            res.live_wakeups_s = max(0.0, st["wakeups"] - st0["wakeups"] - n_sig) / res.live_s
            if "write_bytes" in io0 and "write_bytes" in io1:
                res.live_write_kib_s = (io1["write_bytes"] - io0["write_bytes"]) / 1024 / res.live_s
        res.hwm_kib = tp.proc_status_kib(d.pid, "VmHWM")
        res.rss_end_kib = tp.proc_status_kib(d.pid, "VmRSS")
        res.pd_end_kib = tp.smaps_rollup_kib(d.pid, "Private_Dirty")
        cpu1 = tp.proc_cpu_seconds(d.pid)
        res.ran_s = time.monotonic() - t_conn
        if cpu0 is not None and cpu1 is not None:
            res.cpu_s = cpu1 - cpu0
        pd_peak = max(pd_peak, res.pd_end_kib or 0)
        res.pd_peak_kib = pd_peak
        res.publishes = st.get("publishes") or 0
        res.wakeups = st.get("wakeups") or 0
        out = stop_daemon(d, res.problems)
        fin = tp.last_stats(out)
        # everything acknowledged was forwarded to the observer too
        deadline = time.monotonic() + 15
        while fin and obs.n200 < fin["acked"] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # late duplicates, if any
    finally:
        if d.running:
            d.stop(timeout=15)
        obs.stop()
    if fin:
        res.live_produced = fin["queued_total"]
        if fin["dropped"] or fin["quarantined"]:
            res.problems.append(f"{fin['dropped']} dropped, {fin['quarantined']} quarantined")
        if fin["connects"] != 1:
            res.problems.append(f"{fin['connects']} connects")
    else:
        res.problems.append("no final stats line")

    # -- account for every row -----------------------------------------------------
    seen = bytearray(n)
    live: Dict[str, List[int]] = {s: [] for s in names}
    last_backlog_t = None
    foreign = 0
    for t, payload in obs.msgs:
        for text in payload.decode("utf-8", errors="replace").split("\n"):
            if not text.startswith("200,"):
                continue
            m = expect.MEASUREMENT_RE.match(text.rstrip("\r"))
            try:
                v = int(m["value"]) if m else -1
            except ValueError:
                v = -1
            if not m or m["fragment"] != FRAGMENT or m["series"] not in live or v < 0:
                foreign += 1
                continue
            if v >= BACKLOG_BASE:
                k = v - BACKLOG_BASE
                if k >= n:
                    foreign += 1
                    continue
                if m["series"] != names[k % n_sensors]:
                    res.backlog_wrong_sensor += 1
                if seen[k]:
                    res.backlog_dups += 1
                else:
                    seen[k] = 1
                last_backlog_t = t
            else:
                live[m["series"]].append(v)
    res.backlog_once = sum(seen)
    res.backlog_missing = n - res.backlog_once
    # The stats say "drained" at the first SIGUSR1 reply after it happened
    # (20 ms resolution); the observer's clock for the last backlog row, when
    # it lies within that last poll interval, pins it closer (the broker
    # forwards a PUBLISH and sends its PUBACK together).  An observer that
    # lags behind (Python) is ignored.
    t_done = t_drained
    res.drain_stats_s = t_drained - t_conn
    if last_backlog_t is not None:
        res.drain_observer_s = last_backlog_t - t_conn
        if t_prev < last_backlog_t <= t_drained:
            t_done = last_backlog_t
            res.drain_end_from = "observer"
    res.drain_s = t_done - t_conn
    res.drain_from_start_s = t_done - t_start
    obs.msgs = []

    # what is still in queue.db after the clean stop
    left: Dict[str, List[int]] = {s: [] for s in names}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        for series, value in con.execute(
                "SELECT s.series, q.value FROM samples q JOIN sensors s ON s.id = q.sensor"):
            if value >= BACKLOG_BASE:
                res.backlog_in_db_after += 1
            elif series in left:
                left[series].append(int(value))
    finally:
        con.close()
    for s in names:
        got = live[s]
        res.live_delivered += len(got)
        res.live_dups += len(got) - len(set(got))
        both = set(got) | set(left[s])
        res.live_in_db_after += len(left[s])
        res.live_gaps += (max(both) + 1 - len(both)) if both else 0
    produced_seen = sum(len(set(live[s]) | set(left[s])) for s in names)
    if foreign:
        res.problems.append(f"{foreign} unexpected 200 lines at the broker")
    if res.backlog_missing or res.backlog_dups or res.backlog_wrong_sensor:
        res.problems.append(f"backlog: {res.backlog_missing} missing, {res.backlog_dups} "
                            f"duplicates, {res.backlog_wrong_sensor} under the wrong sensor")
    if res.backlog_in_db_after:
        res.problems.append(f"{res.backlog_in_db_after} backlog rows still in queue.db")
    if res.live_dups or res.live_gaps:
        res.problems.append(f"live samples: {res.live_dups} duplicates, {res.live_gaps} "
                            "missing (gaps)")
    if fin and produced_seen != res.live_produced:
        res.problems.append(f"live samples: the daemon took {res.live_produced}, "
                            f"{produced_seen} are accounted for (delivered or still queued)")
    if verbose:
        log(f"  edgebridged: connected {res.start_to_conn:.2f}s after start; backlog "
            f"acknowledged {res.drain_s:.3f}s after connecting (end from "
            f"{res.drain_end_from}; stats-only {res.drain_stats_s:.3f}s, last row at the "
            f"observer {res.drain_observer_s:.3f}s) = {n / max(res.drain_s, 1e-9):,.0f} "
            f"rows/s; ran {res.ran_s:.1f}s; {res.publishes} publishes, {res.wakeups} "
            f"wakeups" + (f"; CPU {res.cpu_s:.2f}s" if res.cpu_s is not None else ""))
        if res.live_s:
            log(f"    live phase ({res.live_s:.1f}s after the drain): "
                f"{res.live_samples_s:.1f} samples/s acknowledged in "
                f"{res.live_publishes_s:.1f} publishes/s, ~{res.live_wakeups_s:.1f} wakeups/s"
                + (f", {res.live_write_kib_s:.1f} KiB/s written to disk"
                   if res.live_write_kib_s is not None else ""))
        log(f"    VmHWM {res.hwm_kib} KiB, VmRSS {res.rss_end_kib} KiB at the end; "
            f"Private_Dirty peak {res.pd_peak_kib} KiB, end {res.pd_end_kib} KiB")
        log(f"    backlog: {res.backlog_once:,} of {n:,} arrived once, {res.backlog_dups} "
            f"duplicates, {res.backlog_in_db_after} left in queue.db; live: "
            f"{res.live_produced} taken, {res.live_delivered} delivered, "
            f"{res.live_in_db_after} queued at the stop, {res.live_dups} duplicates, "
            f"{res.live_gaps} gaps")
    return res


# -- 3. queue growth ------------------------------------------------------------------------

GROWTH_RE = re.compile(r"^store_growth rows=(?P<rows>\d+) (?P<rest>.*)$", re.M)


def run_growth(root: Path, i: int, verbose: bool) -> Dict[int, Dict[str, float]]:
    d = root / f"growth-{i}"
    d.mkdir(exist_ok=True)
    cmd = [str(STORE_GROWTH), str(d), "-b", "1000", "-r", "256", "-a", "4", "-w", "10000",
           "-m", str(GROWTH_MIN_ROWS), *map(str, GROWTH_SIZES)]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=300, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchFailure(f"store_growth did not finish within 300s: {' '.join(cmd)}") \
            from None
    out: Dict[int, Dict[str, float]] = {}
    for m in GROWTH_RE.finditer(p.stdout):
        out[int(m["rows"])] = {k: float(v) for k, v in
                               (kv.split("=") for kv in m["rest"].split())}
    if p.returncode != 0 or any(n not in out for n in GROWTH_SIZES):
        raise BenchFailure(f"store_growth failed (exit {p.returncode}): {' '.join(cmd)}\n"
                           f"{p.stdout}\n{p.stderr}")
    shutil.rmtree(d, ignore_errors=True)
    if verbose:
        for n in GROWTH_SIZES:
            f = out[n]
            log(f"  store_growth #{i + 1} {n:>9,} rows x{f['reps']:.0f}: insert {f['insert_rate']:>9,.0f}/s "
                f"(at size {f['insert_at_size_rate']:>9,.0f}/s, per CPU-s "
                f"{f['insert_cpu_rate']:>9,.0f}), drain {f['drain_rate']:>10,.0f}/s (at size "
                f"{f['drain_at_size_rate']:>10,.0f}/s, per CPU-s {f['drain_cpu_rate']:>10,.0f}), "
                f"re-open {1000 * f['open_s']:.0f} ms, {f['db_kib'] / 1024:.1f} MiB, "
                f"RSS {f['rss_full_kib']:.0f} KiB full")
    return out


# -- 4. idle wakeups -------------------------------------------------------------------------

STRACE_RE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(?P<calls>\d+)\s+(?:(?P<errors>\d+)\s+)?"
                       r"epoll_wait\s*$", re.M)


class IdleResult:
    def __init__(self):
        self.seconds = 0.0
        self.wakeups = 0
        self.rate = 0.0
        self.strace_calls: Optional[int] = None
        self.strace_seconds = 0.0
        self.strace_note = ""
        self.acked = 0
        self.problems: List[str] = []


def run_idle(env: Env, seconds: float, verbose: bool) -> IdleResult:
    res = IdleResult()
    state = env.dir / "state-idle"
    state.mkdir(exist_ok=True)
    cfg = env.write_config(env.dir / "idle.conf",
                           sensors=counter_sensors(["idle"], run=0, interval="10s"),
                           gateway={"state_dir": state}, cloud={"keepalive": "60s"})
    d = env.daemon(cfg)
    strace = None
    try:
        wait_connected(env, d)
        time.sleep(1.0)  # bootstrap and the first sample acknowledged
        if shutil.which("strace"):
            strace = subprocess.Popen(["strace", "-c", "-e", "trace=epoll_wait",
                                       "-p", str(d.pid)],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
            time.sleep(0.5)  # attached
            if strace.poll() is not None:
                res.strace_note = f"strace could not attach: {strace.stderr.read().strip()}"
                strace = None
        t_strace = time.monotonic()
        st0 = stats_now(d)
        t0 = time.monotonic()
        time.sleep(seconds)
        st1 = stats_now(d)
        t1 = time.monotonic()
        if strace is not None:
            strace.send_signal(signal.SIGINT)
            try:
                _, err = strace.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                strace.kill()
                _, err = strace.communicate()
            res.strace_seconds = time.monotonic() - t_strace
            m = STRACE_RE.search(err or "")
            if m:
                res.strace_calls = int(m["calls"])
            else:
                res.strace_note = f"no epoll_wait line in strace's summary: {err.strip()[:300]}"
        res.seconds = t1 - t0
        # the second SIGUSR1 woke the loop once; the first one is in st0 already
        res.wakeups = st1["wakeups"] - st0["wakeups"] - 1
        res.rate = res.wakeups / res.seconds
        res.acked = st1["acked"] - st0["acked"]
        if st1["connects"] != 1 or st1["state"] != "connected":
            res.problems.append(f"idle run: not connected throughout: {st1}")
        if res.acked < int(seconds / 10) - 1:
            res.problems.append(f"idle run: only {res.acked} samples acknowledged in "
                                f"{res.seconds:.0f}s (one every 10s expected)")
        stop_daemon(d, res.problems)
    finally:
        if strace is not None and strace.poll() is None:
            strace.kill()
            strace.wait()
        if d.running:
            d.stop(timeout=15)
    if verbose:
        log(f"  idle: {res.wakeups} wakeups in {res.seconds:.1f}s = {res.rate:.3f}/s "
            f"({res.acked} samples acknowledged)"
            + (f"; strace: {res.strace_calls} epoll_wait calls in {res.strace_seconds:.1f}s "
               "(2 of them the SIGUSR1s)" if res.strace_calls is not None else "")
            + (f"; {res.strace_note}" if res.strace_note else ""))
    return res


# -- main ---------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backlog", type=int, default=1_000_000,
                    help="rows in the generated backlog (default 1000000)")
    ap.add_argument("--sensors", type=int, default=64, help="sim sensors (default 64)")
    ap.add_argument("--run-after", type=float, default=15.0,
                    help="seconds the daemon runs on after the drain (default 15)")
    ap.add_argument("--bare-repeat", type=int, default=3,
                    help="bare_tls runs (default 3)")
    ap.add_argument("--raw-repeat", type=int, default=3,
                    help="raw_pub runs for the drain-rate ratio (default 3)")
    ap.add_argument("--raw-messages", type=int, default=100000,
                    help="messages per raw_pub run (default 100000)")
    ap.add_argument("--growth-repeat", type=int, default=3,
                    help="store_growth runs (default 3)")
    ap.add_argument("--idle-seconds", type=float, default=60.0,
                    help="idle measurement window (default 60)")
    ap.add_argument("--skip", default="", help="comma-separated: memory, growth, idle")
    ap.add_argument("--throughput-json", type=Path,
                    help="figures from `throughput.py --json` for the summary")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-run figures")
    args = ap.parse_args()
    verbose = not args.quiet
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    if skip - {"memory", "growth", "idle"}:
        print("bench: error: --skip takes memory, growth, idle", file=sys.stderr)
        return 2

    needed = [(daemon_binary(), "make build/edgebridged")]
    if "memory" not in skip:
        needed += [(RAW_PUB, "make build/bench/raw_pub"),
                   (BARE_TLS, "make build/bench/bare_tls")]
    if "growth" not in skip:
        needed.append((STORE_GROWTH, "make build/bench/store_growth"))
    for b, how in needed:
        if not b.is_file():
            print(f"bench: error: {b} not found; run `{how}` first", file=sys.stderr)
            return 2

    keep = args.keep or bool(os.environ.get("BENCH_DIR"))
    if os.environ.get("BENCH_DIR"):
        root = Path(os.environ["BENCH_DIR"]).resolve() / "store-forward"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="edgebridge-bench-sf-"))

    t0 = time.monotonic()
    failures: List[str] = []
    bare: List[Dict[str, int]] = []
    raw_rates: List[float] = []
    mem: Optional[MemoryResult] = None
    growth: List[Dict[int, Dict[str, float]]] = []
    idle: Optional[IdleResult] = None
    env = None
    try:
        log(f"setting up token, PKI and broker in {root}")
        env = Env(root / "env")
        env.broker = tp.QuietBroker(env.dir / "broker", env.pki)
        env.start_broker()
        log(f"broker {env.broker.host}:{env.broker.port}")

        if "memory" not in skip:
            log(f"memory: bare TLS client x{args.bare_repeat}, raw_pub x{args.raw_repeat}, "
                f"edgebridged with {args.sensors} sensors and a {args.backlog:,}-row backlog")
            rp = env.pki.client_cert("raw-pub")
            rp_cert = rp.write_chain(root / "raw-pub-chain.pem", "leaf+intermediate")
            rp_key = rp.write_key(root / "raw-pub.key")
            for i in range(max(args.bare_repeat, args.raw_repeat)):
                if i < args.bare_repeat:
                    bare.append(run_bare(env, i, 2.0, verbose))
                if i < args.raw_repeat:
                    raw_rates.append(tp.run_raw(env.broker, rp_cert, rp_key,
                                                args.raw_messages, i, verbose)[0])
            mem = run_memory(env, args.backlog, args.sensors, args.run_after, verbose)
            if mem.problems:
                failures.append("memory run: " + "; ".join(mem.problems))

        if "growth" not in skip:
            log(f"growth: store_growth x{args.growth_repeat} "
                f"({', '.join(f'{n:,}' for n in GROWTH_SIZES)} rows)")
            for i in range(args.growth_repeat):
                growth.append(run_growth(root, i, verbose))

        if "idle" not in skip:
            log(f"idle: one sensor at 10s, keepalive 60s, {args.idle_seconds:.0f}s")
            idle = run_idle(env, args.idle_seconds, verbose)
            if idle.problems:
                failures.append("; ".join(idle.problems))
    except BenchFailure as e:
        failures.append(str(e))
    except Exception:  # noqa: BLE001 -- a harness step failed: broken, not slow
        failures.append(traceback.format_exc())
    finally:
        if env is not None:
            try:
                env.close()
            except Exception as e:  # noqa: BLE001
                failures.append(f"cleanup: {e}")
        if not keep and not failures:
            shutil.rmtree(root, ignore_errors=True)

    # -- the summary -------------------------------------------------------------------
    fig: dict = {"broken": bool(failures), "failures": failures}
    lines: List[str] = []
    tpj = None
    if args.throughput_json:
        try:
            tpj = json.loads(args.throughput_json.read_text())
        except (OSError, ValueError) as e:
            lines.append(f"1. durable throughput: no figures from {args.throughput_json} ({e})")
    if tpj:
        base = tpj.get("baseline_msg_s")
        lines.append(f"1. durable end-to-end throughput (bench/throughput.py, "
                     f"{tpj.get('samples', 0):,} counter samples a run, medians; "
                     "sim -> SQLite WAL -> MQTT QoS 1 -> PUBACK -> row deleted)")
        if base:
            lines.append(f"   baseline raw_pub, 1 msg/PUBLISH QoS 1:  {base:>11,.0f} msg/s")
        for sy in ("normal", "full"):
            r = tpj.get(f"daemon_{sy}_samples_s")
            if r and base:
                ratio = r / base
                lines.append(f"   edgebridged sync={sy:<6}              {r:>11,.0f} samples/s"
                             f" = {ratio:.1f}x baseline  (target >= {TARGET_RATIO:.0f}x: "
                             f"{verdict(ratio >= TARGET_RATIO)})")
        if tpj.get("fsync_ms"):
            lines.append(f"   (sync=full adds an fdatasync per commit; a 4 KiB append + "
                         f"fdatasync took {tpj['fsync_ms']:.3f} ms here, median, measured "
                         "right before each run)")
        lines.append(f"   broker-side: {tpj.get('missing', '?')} missing, "
                     f"{tpj.get('duplicates', '?')} duplicates; "
                     f"{tpj.get('queue_rows_left', '?')} rows left in queue.db"
                     + ("; THROUGHPUT BENCH BROKEN" if tpj.get("broken") else ""))
        fig["throughput"] = tpj
    if mem is not None and bare:
        b_hwm = median([b["hwm"] for b in bare])
        b_pd = median([b["pd"] for b in bare])
        diff = mib(mem.hwm_kib) - mib(b_hwm)
        raw = median(raw_rates) if raw_rates else None
        drain_rate = args.backlog / mem.drain_s if mem.drain_s > 0 else float("nan")
        fig["memory"] = {
            "bare_tls_vmhwm_kib": b_hwm, "bare_tls_private_dirty_kib": b_pd,
            "bare_tls_runs": [{k: v for k, v in b.items() if k != "maps"} for b in bare],
            "daemon_vmhwm_kib": mem.hwm_kib,
            "daemon_vmhwm_minus_bare_mib": diff,
            "daemon_private_dirty_peak_kib": mem.pd_peak_kib,
            "daemon_private_dirty_end_kib": mem.pd_end_kib,
            "daemon_rss_end_kib": mem.rss_end_kib,
            "backlog_rows": args.backlog, "sensors": args.sensors,
            "drain_s": mem.drain_s, "drain_from_start_s": mem.drain_from_start_s,
            "start_to_connected_s": mem.start_to_conn,
            "drain_rows_s": drain_rate, "raw_pub_msg_s": raw, "raw_pub_runs": raw_rates,
            "drain_ratio": drain_rate / raw if raw else None,
            "backlog_arrived_once": mem.backlog_once, "backlog_missing": mem.backlog_missing,
            "backlog_duplicates": mem.backlog_dups,
            "backlog_left_in_db": mem.backlog_in_db_after,
            "live_taken": mem.live_produced, "live_delivered": mem.live_delivered,
            "live_queued_at_stop": mem.live_in_db_after, "live_duplicates": mem.live_dups,
            "live_gaps": mem.live_gaps}
        lines.append(f"2. memory: {args.sensors} sensors at 1s + a {args.backlog:,}-row "
                     f"backlog ({mem.db_mib:.1f} MiB queue.db), drained, then "
                     f"{args.run_after:.0f}s more")
        lines.append(f"   bare TLS client (libmosquitto + pkcs11 engine + SoftHSM2 key, "
                     f"idle): VmHWM {mib(b_hwm):.2f} MiB, Private_Dirty {mib(b_pd):.2f} MiB")
        lines.append(f"   edgebridged peak RSS (VmHWM) {mib(mem.hwm_kib):.2f} MiB = bare "
                     f"+ {diff:.2f} MiB  (target <= +{TARGET_RSS_OVER_BARE_MIB:.0f} MiB: "
                     f"{verdict(diff <= TARGET_RSS_OVER_BARE_MIB)})")
        pd_ok = mib(mem.pd_peak_kib) <= TARGET_PRIVATE_DIRTY_MIB
        dm = smaps_diff(mem.maps, bare[-1]["maps"])
        fig["memory"]["rss_diff_by_mapping_kib"] = dict(dm)
        top = dm[:6]
        rest = sum(v for _, v in dm[6:])
        lines.append("   where (Rss at the end, daemon - bare client): "
                     + ", ".join(f"{k} {v / 1024:+.2f}" for k, v in top)
                     + f", other {rest / 1024:+.2f} MiB")
        lines.append(f"   edgebridged Private_Dirty peak {mib(mem.pd_peak_kib):.2f} MiB, "
                     f"end {mib(mem.pd_end_kib):.2f} MiB (bare client "
                     f"{mib(b_pd):.2f} MiB; target <= {TARGET_PRIVATE_DIRTY_MIB:.0f} MiB: "
                     f"{verdict(pd_ok)})")
        lines.append(f"   drain: {args.backlog:,} rows at the broker {mem.drain_s:.2f}s after "
                     f"connecting ({mem.drain_from_start_s:.2f}s after the start) = "
                     f"{drain_rate:,.0f} rows/s"
                     + (f" = {drain_rate / raw:.1f}x raw_pub 1 msg/PUBLISH "
                        f"({raw:,.0f} msg/s)" if raw else ""))
        if mem.live_s:
            fig["memory"].update(live_samples_s=mem.live_samples_s,
                                 live_publishes_s=mem.live_publishes_s,
                                 live_wakeups_s=mem.live_wakeups_s,
                                 live_write_kib_s=mem.live_write_kib_s)
            lines.append(f"   after the drain ({args.sensors} sensors at 1s, {mem.live_s:.0f}s): "
                         f"{mem.live_samples_s:.1f} samples/s in {mem.live_publishes_s:.1f} "
                         f"publishes/s ({mem.live_samples_s / max(mem.live_publishes_s, 1e-9):.1f}"
                         f" lines each), ~{mem.live_wakeups_s:.1f} wakeups/s"
                         + (f", {mem.live_write_kib_s:.0f} KiB/s written to disk "
                            f"(/proc/PID/io write_bytes)"
                            if mem.live_write_kib_s is not None else ""))
        lines.append(f"   backlog: {mem.backlog_once:,} of {args.backlog:,} rows arrived "
                     f"exactly once ({mem.backlog_missing} missing, {mem.backlog_dups} "
                     f"duplicates, {mem.backlog_wrong_sensor} under the wrong sensor, "
                     f"{mem.backlog_in_db_after} left in queue.db); live: "
                     f"{mem.live_produced} taken, {mem.live_delivered} delivered + "
                     f"{mem.live_in_db_after} queued at the stop, {mem.live_dups} "
                     f"duplicates, {mem.live_gaps} gaps")
    if growth:
        med = {n: {k: median([g[n][k] for g in growth]) for k in growth[0][n]}
               for n in GROWTH_SIZES}
        b = med[GROWTH_SIZES[0]]
        fig["growth"] = {"median": med, "runs": growth}
        lines.append(f"3. queue growth (store/store.h directly, sync=normal, batches of "
                     f"1000; median of {len(growth)}; ratios to {GROWTH_SIZES[0]:,} rows; "
                     "wall rows/s, and rows per CPU-second, which neighbours hardly move)")
        for n in GROWTH_SIZES:
            f = med[n]
            lines.append(
                f"   {n:>9,} rows: insert {f['insert_rate']:>9,.0f}/s "
                f"({f['insert_rate'] / b['insert_rate']:.2f}x; CPU "
                f"{f['insert_cpu_rate'] / b['insert_cpu_rate']:.2f}x; last 10% "
                f"{f['insert_at_size_rate'] / b['insert_at_size_rate']:.2f}x), "
                f"drain {f['drain_rate']:>10,.0f}/s "
                f"({f['drain_rate'] / b['drain_rate']:.2f}x; CPU "
                f"{f['drain_cpu_rate'] / b['drain_cpu_rate']:.2f}x; first 10% "
                f"{f['drain_at_size_rate'] / b['drain_at_size_rate']:.2f}x); "
                f"re-open {1000 * f['open_s']:.0f} ms; RSS {f['rss_full_kib'] / 1024:.1f} MiB")
    if idle is not None:
        fig["idle"] = {"seconds": idle.seconds, "wakeups": idle.wakeups,
                       "per_s": idle.rate, "strace_epoll_wait_calls": idle.strace_calls,
                       "strace_seconds": idle.strace_seconds, "acked": idle.acked}
        lines.append(f"4. idle (connected, 1 sensor at 10s, keepalive 60s): {idle.wakeups} "
                     f"wakeups in {idle.seconds:.1f}s = {idle.rate:.3f}/s  (target <= "
                     f"{TARGET_WAKEUPS_PER_S:.0f}/s: {verdict(idle.rate <= TARGET_WAKEUPS_PER_S)})"
                     + (f"; strace: {idle.strace_calls} epoll_wait calls in "
                        f"{idle.strace_seconds:.1f}s incl. 2 for the SIGUSR1s"
                        if idle.strace_calls is not None else
                        (f"; {idle.strace_note}" if idle.strace_note else "")))
    if lines:
        print()
        print(f"store-and-forward summary ({os.cpu_count()} CPUs; "
              f"{time.monotonic() - t0:.0f}s; every figure from this run)")
        for ln in lines:
            print(ln)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(fig, indent=1, default=str) + "\n")
    if failures or (tpj and tpj.get("broken")):
        print()
        for f in failures:
            print(f"bench: BROKEN: {f}", file=sys.stderr)
        if tpj and tpj.get("broken"):
            print("bench: BROKEN: bench/throughput.py reported failures (see above)",
                  file=sys.stderr)
        if failures:
            print(f"bench: files kept in {root}", file=sys.stderr)
        return 1
    if keep:
        log(f"files kept in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
