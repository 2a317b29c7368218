#!/usr/bin/python3
"""edgebridge throughput and memory benchmark (`make bench`).

Every figure is printed as a RATIO to a baseline measured in the same run, on
the same broker, so a noisy shared machine shifts both alike.  A benchmark
never fails for being slow: the exit code is non-zero only when something
broke (a sample missing or duplicated at the broker, the daemon crashed,
stalled, dropped samples or exited uncleanly, the baseline client failed).

One run:
  setup     SoftHSM2 token with the device key, PKI, device cert (harness Env),
            mosquitto with mutual TLS on a free loopback port (per-message
            debug logging off: see QuietBroker), a file-key client cert for
            the baseline
  baseline  build/bench/raw_pub: plain libmosquitto, FILE key, QoS 1, ONE
            ~55-byte SmartREST 200 line per PUBLISH, window 1000; messages
            per second until the last PUBACK
  packed    (reference, --no-packed skips it) raw_pub again, but with the
            daemon's traffic shape: 290 lines per PUBLISH, window 20 (the
            default cloud.max_inflight): how far the daemon is from what
            libmosquitto + TLS + the broker allow for the same packing
  daemon    build/edgebridged with one sim sensor, interval = 0 ("as fast as
            the queue accepts"), count = N, through the durable queue: sim
            -> SQLite (WAL) -> MQTT QoS 1 -> PUBACK -> row deleted; once
            with [store] sync = normal and once with sync = full (--sync),
            each on a fresh queue.db; samples ACKNOWLEDGED per second
            from "connected to" until the stats (SIGUSR1, every 100 ms) say
            N acknowledged; inside that last 100 ms the observer's clock for
            the last line pins the end.  The observer on s/us checks every
            sample arrived exactly once (the counter waveform makes value ==
            sample index), and queue.db must hold no row after the stop.
            Peak RSS: VmHWM (/proc/PID/status) and Private_Dirty
            (/proc/PID/smaps_rollup) just before SIGTERM; CPU time
            (/proc/PID/stat) while measured.
All are repeated (interleaved) and the medians reported; --json FILE also
writes them for bench/store_forward.py's summary.  The broker has a
subscriber (the observer) during the daemon and packed runs, none during the
one-message baseline (a Python subscriber can't take 40k messages/s).

    /usr/bin/python3 bench/throughput.py [--raw-messages N] [--samples N]
                                         [--repeat K] [--sync normal,full]
                                         [--no-packed] [--json FILE] [--keep] [-q]

Environment: EDGEBRIDGED (daemon binary, default build/edgebridged),
RAW_PUB (default build/bench/raw_pub), BENCH_DIR (keep everything there),
BENCH_BROKER_LOG=all (keep the harness broker's per-message debug log).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import Broker, Env, Observer, daemon_binary, expect  # noqa: E402

RAW_PUB = Path(os.environ.get("RAW_PUB") or REPO / "build" / "bench" / "raw_pub")

STATS_RE = re.compile(
    r"^edgebridged: info: stats: (?P<state>connected|not connected); samples: "
    r"(?P<queued_total>\d+) queued in total, (?P<acked>\d+) acknowledged, "
    r"(?P<waiting>\d+) waiting(?: \((?P<stored>\d+) stored, (?P<in_ram>\d+) in RAM\))?, "
    r"(?P<dropped>\d+) dropped(?: \(queue full\))?, "
    r"(?P<quarantined>\d+) quarantined; "
    r"(?:store (?P<store_kib>\d+) KiB(?P<cannot_write> \(cannot write\))?; )?"
    r"(?P<publishes>\d+) publishes, (?P<inflight>\d+) in flight"
    r"(?:, (?P<events>\d+) events)?; (?P<connects>\d+) connects; "
    r"(?P<wakeups>\d+) wakeups", re.M)
RAW_RE = re.compile(r"raw_pub messages=(?P<n>\d+) seconds=(?P<s>[\d.]+) "
                    r"rate=(?P<rate>[\d.]+)(?:.* vmhwm_kib=(?P<hwm>-?\d+))?")
EXHAUSTED_RE = re.compile(r"no more samples \((\d+) sent\)")
PROBLEM_RE = re.compile(r"^edgebridged: (error|warning): .*$", re.M)

# The packed reference: raw_pub sending the same packing as the daemon
# (16184-byte publishes hold ~290 lines of ~55 bytes) with the daemon's
# default window (cloud.max_inflight = 20): what the client library, TLS and
# the broker allow for that traffic, i.e. the daemon's own overhead.
PACKED_LINES = 290
PACKED_WINDOW = 20

SIGNAL_EVERY = 0.1  # seconds between SIGUSR1s
STALL_AFTER = 20.0  # no acknowledgement progress for this long: broken
RUN_TIMEOUT = 120.0


class BenchFailure(RuntimeError):
    """Something broke (not: something was slow)."""


class QuietBroker(Broker):
    """The harness broker without `log_type all`.

    mosquitto's debug log writes two lines per PUBLISH (received + PUBACK
    sent): ~150 bytes per message, a real cost for the one-message-per-
    publish baseline (it cut it by ~25% here) and next to nothing for the
    daemon's packed publishes, i.e. it would flatter the ratio.  Connection
    messages (notice) stay, so the harness's log parsing still works.
    """

    def _write_conf(self) -> None:
        super()._write_conf()
        if os.environ.get("BENCH_BROKER_LOG") == "all":
            return
        text = self.conf_file.read_text()
        quiet = "".join(f"log_type {t}\n"
                        for t in ("error", "warning", "notice", "information"))
        if "log_type all\n" not in text:
            return  # the harness changed; keep whatever it chose
        self.conf_file.write_text(text.replace("log_type all\n", quiet))


def log(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def kib_to_mib(kib: float) -> float:
    return kib / 1024.0


# -- /proc ---------------------------------------------------------------------------

def proc_status_kib(pid: int, key: str) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of a process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def smaps_rollup_kib(pid: int, key: str) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# -- baseline ------------------------------------------------------------------------

def run_raw(broker: Broker, cert_file: Path, key_file: Path, n: int, i: int,
            verbose: bool, lines: int = 1, window: int = 1000
            ) -> Tuple[float, Optional[int]]:
    cmd = [str(RAW_PUB), broker.host, str(broker.port), str(broker.server_ca_file),
           str(cert_file), str(key_file), str(n), f"raw-pub-{i}-{lines}",
           str(lines), str(window)]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchFailure(f"raw_pub did not finish {n} messages within "
                           f"{RUN_TIMEOUT:.0f}s") from None
    m = RAW_RE.search(p.stdout)
    if p.returncode != 0 or not m or int(m["n"]) != n:
        raise BenchFailure(f"raw_pub failed (exit {p.returncode}): {' '.join(cmd)}\n"
                           f"stdout: {p.stdout}\nstderr: {p.stderr}")
    rate = float(m["rate"])
    hwm = int(m["hwm"]) if m["hwm"] and int(m["hwm"]) >= 0 else None
    if verbose:
        what = "messages" if lines == 1 else f"lines packed {lines} a publish"
        log(f"  raw_pub #{i + 1}: {n} {what}, window {window}: {float(m['s']):.3f}s = "
            f"{rate:,.0f}/s" + (f", VmHWM {hwm} KiB" if hwm else ""))
    return rate, hwm


# -- daemon --------------------------------------------------------------------------

class DaemonResult:
    def __init__(self):
        self.rate = 0.0            # acknowledged samples/s (refined end)
        self.end_from = "stats"    # what pinned the end time
        self.rate_coarse = 0.0     # end = first stats line showing all acked
        self.rate_observer = 0.0   # end = last line at the observer
        self.seconds = 0.0
        self.hwm_kib: Optional[int] = None
        self.rss_kib: Optional[int] = None
        self.private_dirty_kib: Optional[int] = None
        self.lines = 0
        self.missing = 0
        self.duplicates = 0
        self.foreign = 0           # 200 lines that are not ours
        self.stats: dict = {}
        self.problems: List[str] = []
        self.connect_s = 0.0       # daemon start -> "connected to"
        self.cpu_s: Optional[float] = None  # daemon CPU time while measured
        self.cpu_wall = 0.0        # ... over this wall time
        self.sync = "normal"       # [store] sync of the run
        self.rows_left: Optional[int] = None  # samples rows in queue.db after the stop
        self.fsync_ms: Optional[float] = None  # 4 KiB append + fdatasync, just before


def sensor_sections(n: int) -> dict:
    # the counter waveform: sample k has the value k exactly (offset 0,
    # decimals 0), so every line names its sample.
    return {"sensor.bench": {
        "driver": "sim", "interval": 0, "count": n, "fragment": "c8y_Temperature",
        "series": "T", "unit": "C", "waveform": "counter", "offset": 0,
        "decimals": 0}}


def fsync_ms(d: Path, n: int = 50) -> float:
    """Median time of a 4 KiB append + fdatasync in `d`: what sync = full
    adds to each commit on this disk at this moment (a VM's virtual disk is
    often far faster than a gateway's SD card; a neighbour's I/O slows it)."""
    path = d / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    times = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, b"x" * 4096)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return 1000 * statistics.median(times)


def queue_rows(state: Path) -> Optional[int]:
    """Rows left in <state_dir>/queue.db (None: no queue file)."""
    db = state / "queue.db"
    if not db.exists():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT count(*) FROM samples").fetchone()[0]
    finally:
        con.close()


def last_stats(text: str) -> Optional[dict]:
    ms = list(STATS_RE.finditer(text))
    if not ms:
        return None
    m = ms[-1]
    d = {k: (int(v) if v is not None and v.isdigit() else v) for k, v in m.groupdict().items()}
    d["state"] = m["state"]
    return d


class LeanObserver(Observer):
    """The harness observer, but during the timed run it only keeps the raw
    payloads (one list append per PUBLISH); lines are split and checked after
    the run.  The harness Observer splits every payload into Line tuples in
    the callback: one Python object per line (1M a run), CPU taken from the daemon and
    the broker on a small machine while the clock runs."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.payloads: List[bytes] = []
        self.n200 = 0          # 200 lines so far
        self.last_200 = 0.0    # time.monotonic() of the latest one

    def _on_message(self, client, userdata, msg):
        n = msg.payload.count(b"\n200,") + msg.payload.startswith(b"200,")
        now = time.monotonic()
        with self._lock:
            self.payloads.append(msg.payload)
            if n:
                self.n200 += n
                self.last_200 = now

    def lines_200(self):
        """Every 200 line received so far (parsed after the run)."""
        with self._lock:
            payloads = list(self.payloads)
        for p in payloads:
            for part in p.decode("utf-8", errors="replace").split("\n"):
                part = part.rstrip("\r")
                if part.startswith("200,"):
                    yield part


def check_lines(obs: LeanObserver, n: int, res: DaemonResult) -> None:
    seen = bytearray(n)  # 1 once sample k arrived
    lines = foreign = dups = 0
    for text in obs.lines_200():
        lines += 1
        mm = expect.MEASUREMENT_RE.match(text)
        try:
            k = int(mm["value"]) if mm else -1
        except ValueError:
            k = -1
        if mm is None or not 0 <= k < n or mm["fragment"] != "c8y_Temperature":
            foreign += 1
            continue
        if seen[k]:
            dups += 1
        else:
            seen[k] = 1
    res.lines = lines
    res.foreign = foreign
    res.duplicates = dups
    res.missing = n - (lines - foreign - dups)


def run_daemon(env: Env, n: int, i: int, verbose: bool,
               sync: str = "normal") -> DaemonResult:
    res = DaemonResult()
    res.sync = sync
    obs = LeanObserver(env.broker, client_id=f"observer-{i}-{sync}")
    env._observers.append(obs)  # noqa: SLF001 -- env.close() stops it too
    obs.start()
    state = env.dir / f"state-{i}-{sync}"
    state.mkdir(exist_ok=True)
    res.fsync_ms = fsync_ms(state)
    # a fresh queue.db per run; max_size well above what n samples take
    cfg = env.write_config(env.dir / f"bench-{i}-{sync}.conf", sensors=sensor_sections(n),
                           gateway={"state_dir": state},
                           store={"sync": sync, "max_size": "1G"})
    d = env.daemon(cfg)
    try:
        connected = env.connected_re()
        t_start = time.monotonic()
        t_conn = None
        while t_conn is None:
            if connected.search(d.output):
                t_conn = time.monotonic()
                break
            if not d.running:
                raise BenchFailure(f"edgebridged exited with {d.returncode} before "
                                   f"connecting:\n{d.output}")
            if time.monotonic() - t_start > 30:
                raise BenchFailure(f"edgebridged did not connect within 30s:\n{d.output}")
            time.sleep(0.005)
        res.connect_s = t_conn - t_start
        cpu0 = proc_cpu_seconds(d.pid)

        # (time the SIGUSR1 was sent, acknowledged count in its reply)
        points: List[Tuple[float, int]] = [(t_conn, 0)]
        last_progress = t_conn
        stats = None
        while True:
            t_sig = time.monotonic()
            mark = d.mark()
            d.signal(signal.SIGUSR1)
            # the reply: the next stats line after `mark`
            deadline = t_sig + 5
            while True:
                out = d.output
                st = last_stats(out[mark:])
                if st is not None:
                    break
                if not d.running:
                    raise BenchFailure(f"edgebridged died (exit {d.returncode}) "
                                       f"during the run:\n{out[-4000:]}")
                if time.monotonic() > deadline:
                    raise BenchFailure("edgebridged did not answer SIGUSR1 within 5s "
                                       f"(loop stuck?):\n{out[-4000:]}")
                time.sleep(0.002)
            stats = st
            if st["acked"] > points[-1][1]:
                last_progress = t_sig
            points.append((t_sig, st["acked"]))
            if st["acked"] >= n:
                cpu1 = proc_cpu_seconds(d.pid)
                if cpu0 is not None and cpu1 is not None:
                    res.cpu_s = cpu1 - cpu0
                    res.cpu_wall = t_sig - t_conn
                break
            if t_sig - last_progress > STALL_AFTER:
                raise BenchFailure(
                    f"stall: acknowledged stuck at {st['acked']} of {n} for "
                    f"{STALL_AFTER:.0f}s; last stats: {st}\n{d.output[-4000:]}")
            if t_sig - t_conn > RUN_TIMEOUT:
                raise BenchFailure(f"only {st['acked']} of {n} acknowledged after "
                                   f"{RUN_TIMEOUT:.0f}s")
            time.sleep(max(0.0, t_sig + SIGNAL_EVERY - time.monotonic()))

        res.stats = stats
        # every sample must arrive at the broker side too
        wait_deadline = time.monotonic() + 30
        while obs.n200 < n and time.monotonic() < wait_deadline:
            time.sleep(0.01)  # missing ones are counted below
        time.sleep(0.2)  # late duplicates, if any

        # The last sample was acknowledged somewhere in (t_prev, t_end]
        # (100 ms).  The broker sends that PUBACK and forwards the PUBLISH
        # to the observer together, so the observer's clock for the last
        # line, clamped to that interval, pins the end; without it, assume
        # the rate of the interval before.
        t_end, _ = points[-1]
        t_prev, a_prev = points[-2]
        est = t_end
        if obs.n200 >= n and t_prev < obs.last_200 <= t_end:
            est = obs.last_200
            res.end_from = "observer"
        elif len(points) >= 3:
            t_pp, a_pp = points[-3]
            r = (a_prev - a_pp) / (t_prev - t_pp) if t_prev > t_pp else 0
            if r > 0:
                est = min(t_end, t_prev + (n - a_prev) / r)
                res.end_from = "interpolated"
        res.seconds = est - t_conn
        res.rate = n / res.seconds if res.seconds > 0 else float("inf")
        res.rate_coarse = n / (t_end - t_conn)
        if obs.last_200 > t_conn:
            res.rate_observer = obs.n200 / (obs.last_200 - t_conn)

        # memory just before stopping
        res.hwm_kib = proc_status_kib(d.pid, "VmHWM")
        res.rss_kib = proc_status_kib(d.pid, "VmRSS")
        res.private_dirty_kib = smaps_rollup_kib(d.pid, "Private_Dirty")
        if not d.running:
            raise BenchFailure(f"edgebridged exited with {d.returncode} after the run:"
                               f"\n{d.output[-4000:]}")
        rc = d.stop(timeout=15)
        out = d.output
        if rc != expect.EXIT_OK:
            res.problems.append(f"edgebridged stopped with exit code {rc}")
        fin = last_stats(out)
        if fin:
            res.stats = fin
        m = EXHAUSTED_RE.search(out)
        if not m or int(m.group(1)) != n:
            res.problems.append(f"sensor did not report 'no more samples ({n} sent)'")
        res.problems += [f"daemon said: {p.group(0)}" for p in PROBLEM_RE.finditer(out)]
        st = res.stats
        if st.get("dropped"):
            res.problems.append(f"{st['dropped']} samples dropped (queue full)")
        if st.get("quarantined"):
            res.problems.append(f"{st['quarantined']} samples quarantined")
        if st.get("connects", 1) != 1:
            res.problems.append(f"{st['connects']} connects (reconnected during the run)")
        check_lines(obs, n, res)
        obs.payloads = []  # env keeps the observer until close()
        # every acknowledged sample's row must be gone from the queue
        res.rows_left = queue_rows(state)
        if res.rows_left is None:
            res.problems.append(f"no queue file {state / 'queue.db'}")
        elif res.rows_left:
            res.problems.append(f"{res.rows_left} rows left in queue.db after all "
                                f"{n} samples were acknowledged")
        if verbose:
            cpu = (f"CPU {res.cpu_s:.2f}s = {100 * res.cpu_s / res.cpu_wall:.0f}% of "
                   f"{res.cpu_wall:.2f}s; " if res.cpu_s is not None else "")
            pubs = st.get("publishes") or 0
            log(f"  edgebridged #{i + 1} sync={sync} (fdatasync {res.fsync_ms:.3f} ms): "
                f"connected after {res.connect_s:.2f}s; "
                f"{n} acknowledged in {res.seconds:.3f}s = {res.rate:,.0f}/s "
                f"(end from {res.end_from}; stats-only {res.rate_coarse:,.0f}/s, "
                f"observer {res.rate_observer:,.0f}/s)")
            log(f"    {pubs} publishes ({n / max(1, pubs):.0f} samples each), "
                f"{st.get('wakeups')} wakeups; {cpu}VmHWM {res.hwm_kib} KiB, "
                f"Private_Dirty {res.private_dirty_kib} KiB; broker got {res.lines} lines")
        return res
    finally:
        if d.running:
            d.stop(timeout=15)
        obs.stop()


# -- main ----------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw-messages", type=int, default=100000,
                    help="messages per baseline run (default 100000)")
    ap.add_argument("--samples", type=int, default=1000000,
                    help="samples per daemon run (default 1000000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each (default 3)")
    ap.add_argument("--no-packed", dest="packed", action="store_false",
                    help="skip the packed raw_pub reference")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--sync", default="normal,full",
                    help="[store] sync modes of the daemon runs, comma-separated "
                         "(default normal,full; each repeat runs each)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-run figures")
    args = ap.parse_args()
    verbose = not args.quiet
    syncs = [x.strip() for x in args.sync.split(",") if x.strip()]
    if not syncs or any(x not in ("normal", "full") for x in syncs):
        print(f"bench: error: --sync takes normal and/or full, not {args.sync!r}",
              file=sys.stderr)
        return 2

    binary = daemon_binary()
    for b, how in ((binary, "make build/edgebridged"), (RAW_PUB, "make build/bench/raw_pub")):
        if not b.is_file():
            print(f"bench: error: {b} not found; run `{how}` first", file=sys.stderr)
            return 2

    keep = args.keep or bool(os.environ.get("BENCH_DIR"))
    if os.environ.get("BENCH_DIR"):
        root = Path(os.environ["BENCH_DIR"]).resolve()
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="edgebridge-bench-"))

    t0 = time.monotonic()
    env = None
    raw_rates: List[float] = []
    packed_rates: List[float] = []
    raw_hwm: List[int] = []
    runs: List[DaemonResult] = []
    failures: List[str] = []
    try:
        log(f"setting up token, PKI and broker in {root}")
        env = Env(root / "env")
        env.broker = QuietBroker(env.dir / "broker", env.pki)
        env.start_broker()
        rp = env.pki.client_cert("raw-pub")
        rp_cert = rp.write_chain(root / "raw-pub-chain.pem", "leaf+intermediate")
        rp_key = rp.write_key(root / "raw-pub.key")
        log(f"broker {env.broker.host}:{env.broker.port}; {args.repeat} x "
            f"(raw_pub {args.raw_messages} messages, edgebridged {args.samples} samples)")

        for i in range(args.repeat):
            rate, hwm = run_raw(env.broker, rp_cert, rp_key, args.raw_messages, i, verbose)
            raw_rates.append(rate)
            if hwm:
                raw_hwm.append(hwm)
            if args.packed:
                # with a subscriber, like the daemon runs: the broker forwards
                # the same traffic to an observer
                obs = LeanObserver(env.broker, client_id=f"observer-packed-{i}").start()
                try:
                    packed_rates.append(run_raw(env.broker, rp_cert, rp_key, args.samples,
                                                i, verbose, PACKED_LINES, PACKED_WINDOW)[0])
                    wait_deadline = time.monotonic() + 30
                    while obs.n200 < args.samples and time.monotonic() < wait_deadline:
                        time.sleep(0.01)
                    if obs.n200 != args.samples:
                        raise BenchFailure(f"packed raw_pub: the observer got {obs.n200} "
                                           f"of {args.samples} lines")
                finally:
                    obs.stop()
            for sync in syncs:
                res = run_daemon(env, args.samples, i, verbose, sync)
                runs.append(res)
                if res.missing or res.foreign or res.duplicates or res.problems:
                    failures.append("; ".join(
                        [f"run {i + 1} (sync={sync}): {res.missing} missing, "
                         f"{res.duplicates} duplicates, {res.foreign} unexpected 200 "
                         f"lines at the broker", *res.problems]))
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

    figures: dict = {"broken": bool(failures), "samples": args.samples,
                      "cpus": os.cpu_count()}
    if raw_rates and runs:
        base = median(raw_rates)
        by_sync = {sy: [r for r in runs if r.sync == sy] for sy in syncs}
        by_sync = {sy: rs for sy, rs in by_sync.items() if rs}
        first = next(iter(by_sync.values()))  # memory and CPU: the first mode's runs
        hwm = median([r.hwm_kib for r in first if r.hwm_kib is not None])
        pd = median([r.private_dirty_kib for r in first if r.private_dirty_kib is not None])
        lines = median([r.lines for r in runs])
        missing = sum(r.missing for r in runs)
        dups = sum(r.duplicates for r in runs)
        left = sum(r.rows_left or 0 for r in runs)
        fs = [r.fsync_ms for r in runs if r.fsync_ms is not None]
        if fs:
            figures["fsync_ms"] = median(fs)
        figures.update(baseline_msg_s=base, baseline_runs=raw_rates,
                       broker_lines_per_run=lines, missing=missing, duplicates=dups,
                       queue_rows_left=left, vmhwm_kib=hwm, private_dirty_kib=pd,
                       memory_from_sync=first[0].sync)
        print()
        print(f"summary (median of {len(raw_rates)} baseline / {len(runs)} daemon runs; "
              f"{os.cpu_count()} CPUs; {time.monotonic() - t0:.0f}s in total)")
        print(f"baseline raw libmosquitto QoS1 1 msg/publish (window 1000): "
              f"{base:,.0f} msg/s")
        for sy, rs in by_sync.items():
            rate = median([r.rate for r in rs])
            figures[f"daemon_{sy}_samples_s"] = rate
            figures[f"daemon_{sy}_ratio"] = rate / base
            figures[f"daemon_{sy}_runs"] = [r.rate for r in rs]
            print(f"edgebridged sim->SQLite (sync={sy})->QoS1 packed publishes->PUBACK->"
                  f"row deleted: {rate:,.0f} samples/s  (ratio {rate / base:.1f}x)")
        mem = f"edgebridged peak RSS (VmHWM): {kib_to_mib(hwm):.1f} MiB; " \
              f"Private_Dirty: {kib_to_mib(pd):.1f} MiB (sync={first[0].sync} runs)"
        if raw_hwm:
            rb = median(raw_hwm)
            figures["raw_pub_vmhwm_kib"] = rb
            mem += f"  (raw_pub TLS client VmHWM {kib_to_mib(rb):.1f} MiB, " \
                   f"ratio {hwm / rb:.2f}x)"
        if packed_rates:
            pk = median(packed_rates)
            rate = median([r.rate for r in first])
            figures["packed_lines_s"] = pk
            print(f"reference raw libmosquitto QoS1 packed ({PACKED_LINES} lines/publish, "
                  f"window {PACKED_WINDOW}): {pk:,.0f} lines/s  (edgebridged "
                  f"sync={first[0].sync} at {rate / pk:.2f}x of it)")
        print(mem)
        for sy, rs in by_sync.items():
            cpu_runs = [r for r in rs if r.cpu_s is not None and r.cpu_wall > 0]
            if cpu_runs:
                c = median([r.cpu_s / r.cpu_wall for r in cpu_runs])
                us = median([1e6 * r.cpu_s / args.samples for r in cpu_runs])
                figures[f"daemon_{sy}_cpu_us_per_sample"] = us
                print(f"edgebridged CPU while measured (sync={sy}): {100 * c:.0f}% of one "
                      f"core ({us:.2f} us per sample)")
        if fs:
            print(f"4 KiB append + fdatasync before each run (what sync=full adds per "
                  f"commit): median {median(fs):.3f} ms, {min(fs):.3f}..{max(fs):.3f}")
        print(f"broker-side check: {lines:,.0f} lines received per run, "
              f"{missing} missing, {dups} duplicates (all runs); "
              f"{left} rows left in queue.db after the runs")
        print(f"spread: baseline {min(raw_rates):,.0f}..{max(raw_rates):,.0f} msg/s; "
              + "; ".join(f"edgebridged sync={sy} {min(r.rate for r in rs):,.0f}.."
                          f"{max(r.rate for r in rs):,.0f} samples/s"
                          for sy, rs in by_sync.items())
              + (f"; packed reference {min(packed_rates):,.0f}..{max(packed_rates):,.0f} "
                 "lines/s" if packed_rates else ""))
    if args.json:
        figures["failures"] = failures
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    if failures:
        print()
        for f in failures:
            print(f"bench: BROKEN: {f}", file=sys.stderr)
        print(f"bench: files kept in {root}", file=sys.stderr)
        return 1
    if keep:
        log(f"files kept in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
