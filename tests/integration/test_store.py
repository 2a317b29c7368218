"""Durable store-and-forward: the SQLite queue at <state_dir>/queue.db.

Every scenario uses counter sensors (harness.accounting): each value is
run * STRIDE + n, so every sample is accounted for: what arrived must be
what was produced, minus the drops the daemon counted and reported, with
nothing else missing (a killed run may only miss its uncommitted tail).
Duplicates (at-least-once) are reported and bounded.

The broker is `durable` and the observer keeps its session
(clean_session=False): whatever the daemon publishes while the observer is
away (broker restarts) is queued for it, so "missing" always means "never
published", not "published while the observer was reconnecting".
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from harness import expect, wait_until
from harness.accounting import (LINES_PER_PUBLISH, Ledger, account, counter_sensors,
                                dropped_events, dropped_totals, events, live_lane,
                                request_stats, wait_delivered, wait_stats_stable)
from harness.fs import Tmpfs

START_TIMEOUT = 20
# reconnect fast; keepalive at its minimum
FAST = {"keepalive": "5s", "backoff_min": "200ms", "backoff_max": "1s"}
MAX_INFLIGHT = 20       # the daemon's default [cloud] max_inflight
NAMES = ["boiler", "pump"]
# kill -9 may lose the samples read in the last loop tick; anything older
# than this (generous: ticks take milliseconds) must have been committed
TAIL_AGE_MAX = 1.0


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def durable_env(make_env, **kw):
    kw.setdefault("broker_kw", {})["durable"] = True
    return make_env(**kw)


def observe(env):
    """Broker up and a session-keeping observer subscribed."""
    env.start_broker()
    return env.observer(clean_session=False)


def wait_log_precise(d, pattern, since: int, timeout: float) -> float:
    """Like Daemon.wait_for_log, polling every ms; returns time.time() at
    which the line was seen (within a few ms of the daemon writing it)."""
    rx = expect.log_re(pattern) if isinstance(pattern, str) and pattern in expect.LOG \
        else pattern
    deadline = time.monotonic() + timeout
    with open(d.out_file, "rb") as f:
        f.seek(since)
        buf = ""
        while True:
            chunk = f.read()
            if chunk:
                buf += chunk.decode(errors="replace")
                if rx.search(buf):
                    return time.time()
            if not d.running:
                raise AssertionError(f"edgebridged exited ({d.returncode}); output:\n{d.output}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"edgebridged did not log {rx.pattern!r} within {timeout}s")
            time.sleep(0.001)


def report(rep) -> str:
    print(rep)      # shown with -s, and in the captured output of a failure
    return str(rep)


# -- the accounting helpers themselves (no daemon needed) ----------------------------------------

def _lines(values, sensor="boiler", t="2026-11-22T12:00:00.000Z"):
    from harness import Line
    return [Line("s/us", f"200,c8y_Counter,{sensor},{v},n,{t}", 0.0, i)
            for i, v in enumerate(values)]


def test_accounting_helpers_find_gaps_tails_drops_and_duplicates():
    S = 10_000_000
    # run 0 killed: 0..9 with 5 missing (a gap) -> lost; run 1 killed: 0..3 (tail) -> fine
    led = Ledger(["boiler"]).update(_lines([0, 1, 2, 3, 4, 6, 7, 8, 9, S, S + 1, S + 2, S + 3]))
    rep = account(led, {0: None, 1: None})
    assert not rep.ok and "n = 5 missing" in rep.problems[0], rep
    led = Ledger(["boiler"]).update(_lines([0, 1, 2, 2, 3, S]))
    rep = account(led, {0: None, 1: None})
    assert rep.ok and rep.duplicates == 1, rep
    # complete run: missing must equal counted drops, in the right place
    led = Ledger(["boiler"]).update(_lines([3, 4, 5, 6]))
    assert account(led, {0: 7}, drops={("boiler", 0): 3}, drop_shape="oldest").ok
    assert not account(led, {0: 7}, drops={("boiler", 0): 3}, drop_shape="newest").ok
    assert not account(led, {0: 7}, drops={("boiler", 0): 2}).ok
    assert not account(led, {0: 7}).ok
    assert not account(led, {0: 5}, drops={("boiler", 0): 3}).ok        # 5, 6 beyond count
    assert not account(Ledger(["boiler"]).update(_lines([0, 1])), {1: 2}).ok  # unknown run
    # decimals: exact integers only
    led = Ledger(["boiler"]).update(_lines(["0", "1.0", "2.5"]))
    assert led.count("boiler", 0) == 2 and led.unexpected


def test_stats_and_event_parsers():
    old = ("connected; samples: 123 queued in total, 120 acknowledged, 3 waiting, "
           "0 dropped (queue full), 0 quarantined; 5 publishes, 0 in flight; 1 connects")
    st = expect.parse_stats(old)
    assert (st["connected"], st["queued_total"], st["acknowledged"], st["waiting"],
            st["dropped"]) == (True, 123, 120, 3, 0)
    new = ("not connected; samples: 638 queued in total, 0 acknowledged, 522 waiting "
           "(22 stored, 500 in RAM), 116 dropped, 0 quarantined; store 36 KiB (cannot write)")
    st = expect.parse_stats(new)
    assert (st["connected"], st["waiting"], st["dropped"]) == (False, 522, 116)
    st = expect.parse_stats("connected; 1 acknowledged, 2 dropped (store full), "
                            "3 dropped (disk full), 0 waiting")
    assert st["dropped"] == 5 and st["dropped_by_reason"] == {"store full": 2, "disk full": 3}
    ev = expect.parse_event('400,edgebridge_SamplesDropped,"sensor boiler: 1234 samples '
                            'dropped (store full) between 2026-01-01T00:00:00.000Z and '
                            '2026-01-01T00:01:00.000Z",2026-01-01T00:01:00.123Z')
    assert ev and ev.type == expect.EVENT_SAMPLES_DROPPED
    assert expect.parse_dropped(ev.text) == {"sensor": "boiler", "count": 1234,
                                             "reason": "store full"}
    ev = expect.parse_event("400,edgebridge_StoreReset,queue was corrupt")
    assert ev and ev.type == expect.EVENT_STORE_RESET and ev.time is None


# -- 1. broker down for a while during load ------------------------------------------------

def test_broker_down_under_load_loses_nothing_and_live_goes_first(make_env, edgebridged):
    """2 sensors at 1 ms, broker stopped 5 s, then back: every sample arrives,
    and samples taken after the reconnect overtake the backlog (live lane).

    max_inflight = 2 so that draining the ~10000-sample backlog (~35
    publishes) takes many round trips: enough time for live samples to be
    taken during it and to overtake it."""
    n = 9000
    env = durable_env(make_env)
    env.write_config(sensors=counter_sensors(NAMES, run=0, interval="1ms", count=n),
                     cloud={**FAST, "max_inflight": 2})
    obs = observe(env)
    d = env.daemon()
    d.wait_for_log(env.connected_re(), timeout=START_TIMEOUT)
    ledger = Ledger(NAMES)
    wait_until(lambda: all(ledger.update(obs.snapshot()).count(s, 0) >= 200 for s in NAMES),
               20, what="200 samples of each sensor")

    mark = d.mark()
    down = time.monotonic()
    env.broker.stop()
    d.wait_for_log(expect.log_re("disconnected"), since=mark, timeout=10)
    time.sleep(max(0.0, 5 - (time.monotonic() - down)))
    backlog_before = now_utc()          # no connection possible before this
    env.broker.start()
    t_conn = wait_log_precise(d, env.connected_re(), since=mark, timeout=15)
    live_from = dt.datetime.fromtimestamp(t_conn, dt.timezone.utc)

    wait_delivered(obs, ledger, {(s, 0): n for s in NAMES}, timeout=60)
    time.sleep(0.5)                      # late duplicates, if any
    ledger.update(obs.snapshot())
    rep = account(ledger, {0: n})
    lane = live_lane(ledger, backlog_before, live_from)
    print("live lane:", lane)
    assert rep.ok, report(rep)
    assert rep.duplicates <= 2 * 2 * LINES_PER_PUBLISH, report(rep)   # one interruption
    assert lane["live"] > 0, (f"no sample was taken after the reconnect ({lane}): "
                              "production ended too early")
    assert lane["backlog"] > 1000, f"too small a backlog to judge the live lane: {lane}"
    assert lane["live_before_backlog_end"] > 0, (
        f"live lane: no sample taken after the reconnect arrived before the last backlog "
        f"sample: {lane}")
    st = request_stats(d)
    assert st["dropped"] == 0, st["text"]
    assert d.stop() == expect.EXIT_OK, d.output


# -- 2. kill -9 again and again -------------------------------------------------------------

def test_kill9_twenty_times_loses_no_committed_sample(make_env, edgebridged):
    kills = 20
    final_count = 100
    seed = int(os.environ.get("EB_TEST_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    print(f"kill -9 schedule seed: {seed} (EB_TEST_SEED to repeat)")
    env = make_env()
    obs = observe(env)
    lifetimes = []
    killed_at = []
    for r in range(kills):
        cfg = env.write_config(path=env.dir / f"run{r}.conf",
                               sensors=counter_sensors(NAMES, run=r, interval="5ms"),
                               cloud=FAST)
        d = env.daemon(cfg)
        life = rng.uniform(0.3, 1.5)
        time.sleep(life)
        assert d.running, f"run {r} exited by itself ({d.returncode}):\n{d.output}"
        killed_at.append(time.time())
        d.kill9()
        lifetimes.append(round(life, 2))
    print("run lifetimes before kill -9:", lifetimes)

    cfg = env.write_config(path=env.dir / "final.conf",
                           sensors=counter_sensors(NAMES, run=kills, interval="5ms",
                                                   count=final_count),
                           cloud=FAST)
    d = env.daemon(cfg)
    d.wait_for_log(env.connected_re(), timeout=START_TIMEOUT)
    ledger = Ledger(NAMES)
    wait_delivered(obs, ledger, {(s, kills): final_count for s in NAMES}, timeout=60)
    # the backlog of all killed runs is drained
    wait_stats_stable(d, keys=("acknowledged", "waiting"), settle=0.5, timeout=60,
                      until=lambda st: st["waiting"] == 0)
    time.sleep(0.5)
    ledger.update(obs.snapshot())
    runs = {r: None for r in range(kills)}
    runs[kills] = final_count
    rep = account(ledger, runs)
    delivered_runs = sum(1 for r in range(kills) if all(ledger.count(s, r) for s in NAMES))
    assert rep.ok, report(rep)
    report(rep)
    assert delivered_runs >= kills // 2, (
        f"only {delivered_runs} of {kills} killed runs had samples delivered: the test "
        f"proves little\n{rep}")
    bound = kills * MAX_INFLIGHT * LINES_PER_PUBLISH
    assert rep.duplicates <= bound, report(rep)
    # Only the last tick before the kill may be uncommitted: the newest
    # sample that made it out of a killed run was taken just before the
    # kill (samples are read every 5 ms and committed every loop tick).
    ages = {}
    for r in range(kills):
        taken = [s.taken.timestamp() for s in ledger.samples if s.run == r]
        if taken:
            ages[r] = round(killed_at[r] - max(taken), 3)
    print("age of the newest delivered sample of each killed run at its kill (s):", ages)
    late = {r: a for r, a in ages.items() if a > TAIL_AGE_MAX}
    assert not late, (f"runs whose last {TAIL_AGE_MAX}s of samples before kill -9 were "
                      f"lost (more than the last tick): {late}")
    assert d.stop() == expect.EXIT_OK, d.output


# -- 4. disk full ---------------------------------------------------------------------------

def test_disk_full_keeps_running_counts_drops_and_recovers(make_env, edgebridged):
    """state_dir on a 512k tmpfs (most of it taken by a filler file), broker
    down: the database can't grow; the daemon keeps running, logs it once,
    keeps ram_samples in RAM and counts the rest as dropped (disk full);
    with room again it writes again, and everything not dropped arrives."""
    n = 6000
    ram = 500
    env = durable_env(make_env)
    reason = Tmpfs.unavailable()
    if reason:
        pytest.fail(f"cannot mount a tmpfs: {reason}")
    mnt = Tmpfs(env.state_dir, size="512k").mount()
    try:
        filler = env.state_dir / "filler"
        filler.write_bytes(b"\0" * (256 * 1024))    # leaves ~256k for queue.db + WAL
        env.write_config(sensors=counter_sensors(NAMES, run=0, interval="1ms", count=n),
                         cloud=FAST, store={"max_size": "1G", "ram_samples": ram})
        obs = observe(env)
        env.broker.stop()
        d = env.daemon()
        m = d.wait_for_log(r"^.*" + expect.LOG["store_cannot_write"] + r".*$", timeout=30)
        full_line = m.group(0)          # its reason is checked at the end
        wait_until(lambda: request_stats(d)["dropped"] > 0, 30,
                   what="samples dropped beyond ram_samples (stats)")
        time.sleep(1)
        assert d.running, d.output
        assert d.count(expect.log_re("store_cannot_write")) == 1, \
            f"'store: cannot write' should be logged once per outage:\n{d.output}"

        mark = d.mark()
        filler.unlink()
        mnt.resize("8m")
        d.wait_for_log(expect.log_re("store_writing_again"), since=mark, timeout=30)
        # production finished
        st = wait_stats_stable(d, keys=("queued_total", "dropped", "waiting"), settle=1.0,
                               timeout=60)
        stats_dropped = st["dropped"]
        assert stats_dropped > 0, st["text"]

        env.broker.start()
        d.wait_for_log(env.connected_re(), since=mark, timeout=START_TIMEOUT)
        ledger = Ledger(NAMES)

        def reported():
            tot = dropped_totals(obs.snapshot())
            return {(s, 0): tot.get(s, 0) for s in NAMES}
        wait_delivered(obs, ledger, {(s, 0): n for s in NAMES}, timeout=60, drops=reported)
        time.sleep(0.5)
        ledger.update(obs.snapshot())
        evs = dropped_events(obs.snapshot())
        print("SamplesDropped events:", [e["text"] for e in evs])
        assert evs, "no edgebridge_SamplesDropped event"
        assert {e["reason"] for e in evs} == {"disk full"}, evs
        rep = account(ledger, {0: n}, drops=reported())
        assert rep.ok, report(rep)
        missing = sum(n - ledger.count(s, 0) for s in NAMES)
        assert stats_dropped == missing, (
            f"stats say {stats_dropped} dropped, {missing} are missing\n{rep}")
        assert d.count(expect.log_re("store_cannot_write")) == 1, d.output
        assert expect.log_re("store_disk_full_reason").search(full_line), \
            f"the disk-full line does not give SQLite's reason: {full_line!r}"
        assert d.stop() == expect.EXIT_OK, d.output
    finally:
        env.close()
        mnt.close()


# -- 5. overflow policy -------------------------------------------------------------------------

def smallest_max_size(env, **config) -> str:
    """The smallest [store] max_size the daemon accepts (--check-config)."""
    tried = []
    for size in ("16K", "32K", "64K", "128K", "256K", "512K", "1M"):
        env.write_config(store={"max_size": size}, **config)
        r = env.check_config()
        if r.returncode == 0:
            return size
        tried.append(f"{size}: {r.stderr.strip()}")
    pytest.fail("no small [store] max_size accepted:\n" + "\n".join(tried), pytrace=False)


@pytest.mark.parametrize("policy", ["drop-oldest", "drop-newest"])
def test_overflow_counts_and_reports_exactly_the_missing(make_env, edgebridged, policy):
    n = 5000
    env = durable_env(make_env)
    sensors = counter_sensors(NAMES, run=0, interval="1ms", count=n)
    size = smallest_max_size(env, sensors=sensors, cloud=FAST)
    print(f"max_size = {size}")
    env.write_config(sensors=sensors, cloud=FAST,
                     store={"max_size": size, "overflow": policy})
    obs = observe(env)
    env.broker.stop()
    d = env.daemon()
    # broker down all along: production ends with the queue full
    st = wait_stats_stable(d, keys=("queued_total", "dropped", "waiting"), settle=1.0,
                           timeout=60, until=lambda st: st["dropped"] > 0)
    stats_dropped = st["dropped"]
    assert d.running, d.output

    mark = d.mark()
    env.broker.start()
    d.wait_for_log(env.connected_re(), since=mark, timeout=START_TIMEOUT)
    ledger = Ledger(NAMES)

    def reported():
        tot = dropped_totals(obs.snapshot())
        return {(s, 0): tot.get(s, 0) for s in NAMES}
    wait_delivered(obs, ledger, {(s, 0): n for s in NAMES}, timeout=60, drops=reported)
    time.sleep(0.5)
    ledger.update(obs.snapshot())
    evs = dropped_events(obs.snapshot())
    print("SamplesDropped events:", [e["text"] for e in evs])
    assert evs, "no edgebridge_SamplesDropped event"
    assert {e["reason"] for e in evs} == {"store full"}, evs
    shape = "oldest" if policy == "drop-oldest" else "newest"
    rep = account(ledger, {0: n}, drops=reported(), drop_shape=shape)
    assert rep.ok, report(rep)
    report(rep)
    missing = sum(n - ledger.count(s, 0) for s in NAMES)
    assert missing > 0
    assert stats_dropped == missing, (
        f"stats say {stats_dropped} dropped, {missing} are missing\n{rep}")
    assert d.stop() == expect.EXIT_OK, d.output


# -- 6. corrupt database at start -----------------------------------------------------------------

def corrupt_bytes(kind: str, tmp: Path) -> bytes:
    rnd = random.Random(kind)
    if kind == "random":
        return bytes(rnd.getrandbits(8) for _ in range(20000))
    # a real SQLite file: keep its 100-byte header, garbage after it
    db = tmp / "real.db"
    con = sqlite3.connect(db)
    con.execute("create table t (a integer primary key, b text)")
    con.executemany("insert into t (b) values (?)", [("x" * 100,)] * 200)
    con.commit()
    con.close()
    real = db.read_bytes()
    assert real.startswith(b"SQLite format 3\0")
    return real[:100] + bytes(rnd.getrandbits(8) for _ in range(len(real) - 100))


@pytest.mark.parametrize("kind", ["sqlite-header-then-garbage", "random"])
def test_corrupt_database_is_moved_aside(make_env, edgebridged, kind):
    n = 60
    env = make_env()
    bad = corrupt_bytes(kind, env.dir)
    (env.state_dir / "queue.db").write_bytes(bad)
    env.write_config(sensors=counter_sensors(NAMES, run=0, interval="20ms", count=n),
                     cloud=FAST)
    obs = observe(env)
    d = env.daemon()
    d.wait_for_log(expect.log_re("store_corrupt"), timeout=START_TIMEOUT)
    ledger = Ledger(NAMES)
    wait_delivered(obs, ledger, {(s, 0): n for s in NAMES}, timeout=30)
    assert d.running, d.output
    kept = sorted(env.state_dir.glob("queue.db.corrupt*"))
    assert len(kept) == 1, f"moved-aside file: {sorted(p.name for p in env.state_dir.iterdir())}"
    assert kept[0].read_bytes() == bad, f"{kept[0].name} is not the old file, unchanged"
    assert (env.state_dir / "queue.db").exists()
    assert (env.state_dir / "queue.db").read_bytes()[:16] == b"SQLite format 3\0"
    resets = obs.wait_lines(lambda l: l.text.startswith(f"400,{expect.EVENT_STORE_RESET},"),
                            timeout=15)
    assert expect.parse_event(resets[0].text), resets[0].text
    time.sleep(0.3)
    ledger.update(obs.snapshot())
    rep = account(ledger, {0: n})
    assert rep.ok, report(rep)
    assert d.stop() == expect.EXIT_OK, d.output


# -- 7. restart without kill ----------------------------------------------------------------------

def test_samples_queued_before_a_clean_restart_are_delivered_after_it(make_env, edgebridged):
    n0, n1 = 300, 100
    env = durable_env(make_env)
    obs = observe(env)
    env.broker.stop()
    env.write_config(path=env.dir / "run0.conf",
                     sensors=counter_sensors(NAMES, run=0, interval="5ms", count=n0),
                     cloud=FAST)
    d0 = env.daemon()
    st = wait_stats_stable(d0, keys=("queued_total", "waiting"), settle=0.5, timeout=30,
                           until=lambda st: st["waiting"] == len(NAMES) * n0)
    assert st["acknowledged"] in (0, None), st["text"]
    d0.signal(signal.SIGTERM)
    assert d0.wait(timeout=10) == expect.EXIT_OK, d0.output
    assert (env.state_dir / "queue.db").exists()

    env.broker.start()
    env.write_config(path=env.dir / "run1.conf",
                     sensors=counter_sensors(NAMES, run=1, interval="10ms", count=n1),
                     cloud=FAST)
    d1 = env.daemon()
    d1.wait_for_log(env.connected_re(), timeout=START_TIMEOUT)
    ledger = Ledger(NAMES)
    need = {**{(s, 0): n0 for s in NAMES}, **{(s, 1): n1 for s in NAMES}}
    wait_delivered(obs, ledger, need, timeout=30)
    time.sleep(0.3)
    ledger.update(obs.snapshot())
    rep = account(ledger, {0: n0, 1: n1})
    assert rep.ok, report(rep)
    assert rep.duplicates <= MAX_INFLIGHT * LINES_PER_PUBLISH, report(rep)
    assert not dropped_events(obs.snapshot()), events(obs.snapshot())
    st = wait_stats_stable(d1, keys=("waiting",), settle=0.3, timeout=10,
                           until=lambda st: st["waiting"] == 0)
    assert d1.stop() == expect.EXIT_OK, d1.output


# -- 8. max_age ----------------------------------------------------------------------------------

def test_max_age_drops_old_samples_counts_and_reports_them(make_env, edgebridged):
    """max_age = 1s, broker down until the daemon has dropped samples for
    age (it checks ages periodically, every 10 s today), then up while
    production goes on: the too-old samples are the oldest ones, counted
    and reported with reason 'too old'; the rest arrives."""
    n = 3000                             # 5 ms each: ~15 s
    env = durable_env(make_env)
    env.write_config(sensors=counter_sensors(NAMES, run=0, interval="5ms", count=n),
                     cloud=FAST, store={"max_age": "1s"})
    obs = observe(env)
    env.broker.stop()
    d = env.daemon()
    wait_until(lambda: request_stats(d)["dropped"] > 0, 30,
               what="samples dropped for age (stats)")
    mark = d.mark()
    env.broker.start()
    d.wait_for_log(env.connected_re(), since=mark, timeout=START_TIMEOUT)
    ledger = Ledger(NAMES)

    def reported():
        tot = dropped_totals(obs.snapshot())
        return {(s, 0): tot.get(s, 0) for s in NAMES}
    wait_delivered(obs, ledger, {(s, 0): n for s in NAMES}, timeout=30, drops=reported)
    st = wait_stats_stable(d, keys=("dropped", "waiting"), settle=0.5, timeout=20,
                           until=lambda st: st["waiting"] == 0)
    time.sleep(0.3)
    ledger.update(obs.snapshot())
    evs = dropped_events(obs.snapshot())
    print("SamplesDropped events:", [e["text"] for e in evs])
    assert evs, "no edgebridge_SamplesDropped event"
    assert {e["reason"] for e in evs} == {"too old"}, evs
    rep = account(ledger, {0: n}, drops=reported(), drop_shape="oldest")
    assert rep.ok, report(rep)
    report(rep)
    missing = sum(n - ledger.count(s, 0) for s in NAMES)
    assert 0 < missing < len(NAMES) * n, f"expected some, not all, to be too old\n{rep}"
    assert st["dropped"] == missing, f"stats: {st['text']}\n{rep}"
    assert d.stop() == expect.EXIT_OK, d.output
