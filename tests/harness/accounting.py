"""Account for every sample: counter sensors, a ledger of what arrived, and
checks of "nothing committed was lost".

The sim driver's `waveform = counter` emits offset + n for n = 0, 1, 2, ...
(exact integers). Each run of the daemon gets its own offset, run * STRIDE,
so every received value says which run produced it and its index n:

    sections = counter_sensors(["boiler", "pump"], run=r, interval="10ms", count=500)
    env.write_config(sensors=sections, ...)
    ledger = Ledger(["boiler", "pump"])
    ledger.update(obs.snapshot())
    report = account(ledger, {0: None, 1: 500})   # run 0 killed, run 1 complete
    assert report.ok, report

Per (sensor, run) the received n must be a gap-free prefix 0..K-1 (a gap is a
committed sample that was lost; a killed run may miss its uncommitted tail);
for a run whose production is known to be complete (count reached, clean
stop) nothing may miss except counted drops, which must match exactly.
Duplicates (at-least-once delivery) are counted and reported, and tests
bound them.

Also here: SIGUSR1 stats (request_stats, wait_stats_stable) and the
edgebridge_SamplesDropped events (dropped_events, dropped_totals).
"""

from __future__ import annotations

import collections
import datetime as dt
import signal
import time
from decimal import Decimal, InvalidOperation
from typing import (Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple)

from . import expect

STRIDE = 10_000_000          # offset of run r = r * STRIDE
FRAGMENT = "c8y_Counter"
UNIT = "n"
# Bound for duplicates per interruption (kill, reconnect): every publish in
# flight may be sent again; Cumulocity's 16184 bytes hold ~300 sample lines.
LINES_PER_PUBLISH = 300


# -- configuration -------------------------------------------------------------

def counter_sensor(name: str, *, run: int = 0, offset: Optional[int] = None,
                   interval: str = "10ms", count: Optional[int] = None,
                   stride: int = STRIDE, **extra: Any) -> Dict[str, Any]:
    """Keys of one [sensor.NAME] section with the counter waveform; the
    series is the sensor name (how the ledger tells sensors apart)."""
    return {"driver": "sim", "waveform": "counter",
            "offset": run * stride if offset is None else offset,
            "interval": interval, "count": count, "decimals": 0,
            "fragment": FRAGMENT, "series": name, "unit": UNIT, **extra}


def counter_sensors(names: Iterable[str], **kw: Any) -> Dict[str, Dict[str, Any]]:
    """{"sensor.NAME": {...}} for env.write_config(sensors=...)."""
    return {f"sensor.{n}": counter_sensor(n, **kw) for n in names}


# -- what arrived -----------------------------------------------------------------

class Sample(NamedTuple):
    sensor: str
    run: int
    n: int
    taken: dt.datetime          # the time in the 200 line (when it was read)
    received: float             # time.time() at the observer
    pos: int                    # index among all lines the observer got
    msg_index: int              # which PUBLISH carried it


def parse_counter(text: str) -> Optional[int]:
    """Exact integer of a counter value ("10000007", "10000007.0"), else None."""
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    if d != d.to_integral_value():
        return None
    return int(d)


class Ledger:
    """Counter samples received by an Observer, sorted by (sensor, run, n)."""

    def __init__(self, sensors: Iterable[str], fragment: str = FRAGMENT,
                 stride: int = STRIDE):
        self.sensors = list(sensors)
        self.fragment = fragment
        self.stride = stride
        self.samples: List[Sample] = []
        self.unexpected: List[str] = []     # 200 lines we can't account for
        self._seen = 0
        self._copies: Dict[Tuple[str, int], collections.Counter] = \
            collections.defaultdict(collections.Counter)
        self._first: Dict[Tuple[str, int, int], Sample] = {}

    def update(self, lines: Sequence) -> "Ledger":
        """Take the observer lines not seen yet (pass obs.snapshot())."""
        for pos in range(self._seen, len(lines)):
            line = lines[pos]
            if not line.text.startswith("200,"):
                continue
            m = expect.MEASUREMENT_RE.match(line.text)
            if not m or m["fragment"] != self.fragment:
                if m is None or m["series"] in self.sensors:
                    self.unexpected.append(line.text)
                continue
            if m["series"] not in self.sensors:
                self.unexpected.append(line.text)
                continue
            v = parse_counter(m["value"])
            if v is None or v < 0:
                self.unexpected.append(line.text)
                continue
            s = Sample(m["series"], v // self.stride, v % self.stride,
                       expect.parse_time(m["time"]), line.time, pos, line.msg_index)
            self.samples.append(s)
            self._copies[(s.sensor, s.run)][s.n] += 1
            self._first.setdefault((s.sensor, s.run, s.n), s)
        self._seen = len(lines)
        return self

    # -- views -------------------------------------------------------------------
    def runs(self) -> List[int]:
        return sorted({r for (_, r) in self._copies})

    def received(self, sensor: str, run: int) -> set:
        return set(self._copies.get((sensor, run), ()))

    def count(self, sensor: str, run: int) -> int:
        return len(self._copies.get((sensor, run), ()))

    def first(self, sensor: str, run: int, n: int) -> Optional[Sample]:
        return self._first.get((sensor, run, n))

    def first_arrivals(self) -> List[Sample]:
        """One Sample per distinct value: its first arrival."""
        return list(self._first.values())

    def duplicates(self) -> Dict[Tuple[str, int], int]:
        """Extra copies per (sensor, run)."""
        out = {}
        for key, c in self._copies.items():
            extra = sum(v - 1 for v in c.values())
            if extra:
                out[key] = extra
        return out

    def total_duplicates(self) -> int:
        return sum(self.duplicates().values())

    def has_all(self, sensor: str, run: int, produced: int, dropped: int = 0) -> bool:
        """Every produced sample (but `dropped` of them) arrived."""
        return self.count(sensor, run) >= produced - dropped


# -- checks ---------------------------------------------------------------------

def _ranges(ns: Iterable[int], limit: int = 8) -> str:
    """[3, 4, 5, 9] -> '3..5, 9'"""
    ns = sorted(ns)
    parts: List[str] = []
    i = 0
    while i < len(ns) and len(parts) < limit:
        j = i
        while j + 1 < len(ns) and ns[j + 1] == ns[j] + 1:
            j += 1
        parts.append(str(ns[i]) if i == j else f"{ns[i]}..{ns[j]}")
        i = j + 1
    if i < len(ns):
        parts.append(f"... ({len(ns)} in all)")
    return ", ".join(parts)


class Report:
    def __init__(self):
        self.problems: List[str] = []
        self.rows: List[str] = []
        self.duplicates = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        out = ["accounting:", *("  " + r for r in self.rows),
               f"  duplicates in total: {self.duplicates}"]
        if self.problems:
            out += ["PROBLEMS:", *("  " + p for p in self.problems)]
        return "\n".join(out)


def account(ledger: Ledger, runs: Mapping[int, Optional[int]],
            sensors: Optional[Iterable[str]] = None,
            drops: Optional[Mapping[Tuple[str, int], int]] = None,
            drop_shape: Optional[str] = None) -> Report:
    """Check every (sensor, run).

    runs: {run: produced} with produced = samples each sensor made in that
      run when it is known to be complete (count reached, then stopped
      cleanly), or None when the run was killed (its uncommitted tail may be
      missing, nothing else).
    drops: counted drops per (sensor, run) (from stats / events): for a
      complete run exactly that many must be missing.
    drop_shape: "oldest" (the missing ones are 0..d-1), "newest"
      (produced-d..produced-1) or None (don't care which).
    """
    rep = Report()
    sensors = list(sensors or ledger.sensors)
    drops = dict(drops or {})
    for r in ledger.runs():
        if r not in runs:
            rep.problems.append(f"values of an unknown run {r} arrived "
                                f"(sensors {[s for s in sensors if ledger.count(s, r)]})")
    for s in sensors:
        for r, produced in sorted(runs.items()):
            got = ledger.received(s, r)
            dup = sum(v - 1 for v in ledger._copies.get((s, r), {}).values())
            top = max(got) + 1 if got else 0
            d = drops.get((s, r), 0)
            if produced is None:
                gaps = set(range(top)) - got
                rep.rows.append(f"{s} run {r} (killed): {len(got)} received, prefix 0..{top - 1}, "
                                f"{len(gaps)} missing inside, {dup} duplicates")
                if gaps:
                    rep.problems.append(f"{s} run {r}: committed samples lost: n = {_ranges(gaps)} "
                                        f"missing below the last received n = {top - 1}")
                continue
            beyond = {n for n in got if n >= produced}
            missing = set(range(produced)) - got
            rep.rows.append(f"{s} run {r}: produced {produced}, {len(got)} received, "
                            f"{len(missing)} missing, {d} counted drops, {dup} duplicates")
            if beyond:
                rep.problems.append(f"{s} run {r}: values beyond count {produced}: {_ranges(beyond)}")
            if len(missing) != d:
                rep.problems.append(f"{s} run {r}: {len(missing)} samples missing but {d} drops "
                                    f"counted; missing n = {_ranges(missing)}")
            elif d and drop_shape == "oldest" and missing != set(range(d)):
                rep.problems.append(f"{s} run {r}: drop-oldest, yet the missing ones are not the "
                                    f"oldest {d}: missing n = {_ranges(missing)}")
            elif d and drop_shape == "newest" and missing != set(range(produced - d, produced)):
                rep.problems.append(f"{s} run {r}: drop-newest, yet the missing ones are not the "
                                    f"newest {d}: missing n = {_ranges(missing)}")
    rep.duplicates = ledger.total_duplicates()
    if ledger.unexpected:
        rep.problems.append(f"{len(ledger.unexpected)} measurement lines not from the counter "
                            f"sensors or not exact integers, e.g. {ledger.unexpected[:3]}")
    return rep


def live_lane(ledger: Ledger, backlog_before: dt.datetime, live_from: dt.datetime
              ) -> Dict[str, Any]:
    """Arrival order around a reconnect: `backlog` = samples taken before
    `backlog_before` (the connection was down then), `live` = taken at or
    after `live_from` (the new connection was up). Returns the position (in
    the observer's line order) of the first live sample and of the last
    backlog sample (first arrivals only), and how many live samples
    overtook the backlog tail."""
    firsts = ledger.first_arrivals()
    backlog = [s for s in firsts if s.taken < backlog_before]
    live = [s for s in firsts if s.taken >= live_from]
    last_backlog = max((s.pos for s in backlog), default=None)
    first_live = min((s.pos for s in live), default=None)
    overtaking = (sum(1 for s in live if s.pos < last_backlog)
                  if last_backlog is not None else 0)
    return {"backlog": len(backlog), "live": len(live), "last_backlog_pos": last_backlog,
            "first_live_pos": first_live, "live_before_backlog_end": overtaking}


# -- the daemon's counters ------------------------------------------------------------

def request_stats(daemon, timeout: float = 10, start_timeout: float = 30
                  ) -> Dict[str, Any]:
    """SIGUSR1, then the parsed stats line it logs (expect.parse_stats).
    Waits for the end of start-up first: before its signal handling is set
    up, SIGUSR1 would terminate the daemon."""
    daemon.wait_for_log(expect.log_re("running"), timeout=start_timeout)
    mark = daemon.mark()
    daemon.signal(signal.SIGUSR1)
    m = daemon.wait_for_log(expect.log_re("stats_line"), since=mark, timeout=timeout)
    return expect.parse_stats(m["text"])


def wait_stats_stable(daemon, keys: Sequence[str] = ("queued_total", "dropped", "waiting"),
                      settle: float = 1.0, timeout: float = 60,
                      until: Optional[Callable[[Dict[str, Any]], bool]] = None
                      ) -> Dict[str, Any]:
    """Poll the stats until `keys` stay the same for `settle` seconds (and
    `until(stats)` holds, if given): e.g. production finished."""
    deadline = time.monotonic() + timeout
    last = None
    since = time.monotonic()
    while True:
        st = request_stats(daemon)
        vals = tuple(st.get(k) for k in keys)
        if vals != last:
            last, since = vals, time.monotonic()
        elif time.monotonic() - since >= settle and (until is None or until(st)):
            return st
        if time.monotonic() >= deadline:
            raise TimeoutError(f"stats did not settle within {timeout}s; last: {st['text']}")
        time.sleep(min(0.25, settle / 3))


# -- edgebridge_SamplesDropped / StoreReset events ---------------------------------------

def events(lines: Sequence, type: Optional[str] = None) -> List[expect.Event]:
    out = []
    for line in lines:
        if line.text.startswith("400,"):
            ev = expect.parse_event(line.text)
            if ev is None:
                raise AssertionError(f"malformed event line {line.text!r}")
            if type is None or ev.type == type:
                out.append(ev)
    return out


def dropped_events(lines: Sequence) -> List[Dict[str, Any]]:
    """Every edgebridge_SamplesDropped event as {sensor, count, reason, text}."""
    out = []
    for ev in events(lines, expect.EVENT_SAMPLES_DROPPED):
        d = expect.parse_dropped(ev.text)
        if d is None:
            raise AssertionError(f"SamplesDropped event without 'sensor NAME: N samples "
                                 f"dropped (reason)': {ev.text!r}")
        d["text"] = ev.text
        out.append(d)
    return out


def dropped_totals(lines: Sequence, reason: Optional[str] = None) -> Dict[str, int]:
    """Sum of reported drops per sensor (only `reason`, if given)."""
    tot: Dict[str, int] = collections.Counter()
    for d in dropped_events(lines):
        if reason is None or d["reason"] == reason:
            tot[d["sensor"]] += d["count"]
    return dict(tot)


def wait_delivered(obs, ledger: Ledger, need: Mapping[Tuple[str, int], int],
                   timeout: float = 60,
                   drops: Optional[Callable[[], Mapping[Tuple[str, int], int]]] = None,
                   runs: Optional[Mapping[int, Optional[int]]] = None) -> Ledger:
    """Poll the observer until, for every (sensor, run) in `need`, the
    distinct values received plus the drops counted so far (`drops()`, e.g.
    from the SamplesDropped events) reach need[(sensor, run)]. On timeout
    the error carries the accounting report (with `runs`, if given)."""
    deadline = time.monotonic() + timeout
    while True:
        ledger.update(obs.snapshot())
        dr = dict(drops() if drops else {})
        short = {k: n - ledger.count(*k) - dr.get(k, 0) for k, n in need.items()}
        short = {k: v for k, v in short.items() if v > 0}
        if not short:
            return ledger
        if time.monotonic() >= deadline:
            rep = account(ledger, runs or {r: n for (_, r), n in need.items()},
                          drops=dr)
            raise TimeoutError(f"not everything delivered within {timeout}s; still short "
                               f"(sensor, run): {short}\n{rep}")
        time.sleep(0.1)
