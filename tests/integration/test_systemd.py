"""systemd integration and run-time control: sd_notify (READY, STATUS,
WATCHDOG, STOPPING) over a real NOTIFY_SOCKET, SIGHUP reloading the sensor
list from a conf.d drop-in, SIGUSR1 counters, and a sensor that fails while
the others go on."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time

from harness import wait_until


class NotifySocket:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []  # (time, {key: value})
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(l.split("=", 1) for l in data.decode().splitlines() if "=" in l)
            self.messages.append((time.monotonic(), fields))

    def having(self, key):
        return [(t, m) for t, m in list(self.messages) if key in m]

    def close(self):
        self._stop = True
        self._t.join(2)
        self.sock.close()


def test_sd_notify_ready_status_watchdog_stopping(env):
    env.start_broker()
    ns = NotifySocket(env.dir / "notify.sock")
    try:
        d = env.daemon(env={"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "400000"})
        wait_until(lambda: ns.having("READY"), timeout=20)
        assert ns.having("READY")[0][1]["READY"] == "1"
        d.wait_for_log(env.connected_re(), timeout=20)
        # WATCHDOG=1 at half the period: several within 2 s, none late
        t0 = time.monotonic()
        wait_until(lambda: len([1 for t, _ in ns.having("WATCHDOG") if t > t0]) >= 4,
                   timeout=10)
        pings = [t for t, _ in ns.having("WATCHDOG")]
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < 0.4 * 1.5, f"watchdog gaps {gaps}"
        # STATUS says where we are, in words
        wait_until(lambda: any("connected to" in m["STATUS"]
                               for _, m in ns.having("STATUS")), timeout=10)
        status = [m["STATUS"] for _, m in ns.having("STATUS")][-1]
        assert re.search(r"connected to 127\.0\.0\.1:\d+; 2 sensors; \d+ sent", status), status
        d.signal(signal.SIGTERM)
        assert d.wait(15) == 0
        assert ns.having("STOPPING")
    finally:
        ns.close()


def test_no_watchdog_pings_without_watchdog_usec(env):
    env.start_broker()
    ns = NotifySocket(env.dir / "notify.sock")
    try:
        d = env.daemon(env={"NOTIFY_SOCKET": ns.path})
        wait_until(lambda: ns.having("READY"), timeout=20)
        time.sleep(1.0)
        assert not ns.having("WATCHDOG")
        d.stop()
    finally:
        ns.close()


def test_sighup_applies_a_new_sensor_list(env):
    env.start_broker()
    obs = env.observer()
    d = env.daemon()
    d.wait_for_log(env.connected_re(), timeout=20)
    obs.wait_lines(lambda l: l.text.startswith("200,c8y_Temperature,"), n=1, timeout=20)

    dropin = env.dir / "conf.d"
    dropin.mkdir(exist_ok=True)
    (dropin / "50-extra.conf").write_text(
        "[sensor.flow]\ndriver = sim\ninterval = 200ms\nfragment = c8y_Flow\n"
        "series = F\nunit = m3/h\nwaveform = ramp\n")
    mark = d.mark()
    d.signal(signal.SIGHUP)
    d.wait_for_log(r"reloaded: 3 sensors", timeout=10, since=mark)
    obs.wait_lines(lambda l: l.text.startswith("200,c8y_Flow,F,"), n=3, timeout=20)

    # a broken drop-in is refused with file:line and the running set stays
    (dropin / "60-broken.conf").write_text("[sensor.bad]\ndriver = sim\ninterval = soon\n")
    mark = d.mark()
    d.signal(signal.SIGHUP)
    d.wait_for_log(r"60-broken\.conf:3: .*not a duration", timeout=10, since=mark)
    d.wait_for_log(r"keeping the running configuration", timeout=10, since=mark)
    is_flow = lambda l: l.text.startswith("200,c8y_Flow,F,")  # noqa: E731
    before = len([l for l in obs.snapshot() if is_flow(l)])
    obs.wait_lines(is_flow, n=before + 3, timeout=20)
    assert d.running
    d.stop()
    assert d.returncode == 0


def test_sigusr1_logs_counters(env):
    env.start_broker()
    obs = env.observer()
    d = env.daemon()
    d.wait_for_log(env.connected_re(), timeout=20)
    obs.wait_lines(lambda l: l.text.startswith("200,"), n=4, timeout=20)
    mark = d.mark()
    d.signal(signal.SIGUSR1)
    m = d.wait_for_log(r"stats: connected; samples: (\d+) queued in total, (\d+) acknowledged",
                       timeout=10, since=mark)
    assert int(m[1]) >= 4 and int(m[2]) >= 4, m[0]
    assert d.running


def test_failing_sensor_is_reported_once_and_others_continue(env):
    env.start_broker()
    obs = env.observer()
    missing = env.dir / "hwmon" / "temp1_input"
    env.write_config(sensor__cpu={"driver": "hwmon", "path": str(missing),
                                  "interval": "100ms", "fragment": "c8y_Cpu",
                                  "series": "T", "unit": "C"})
    d = env.daemon()
    d.wait_for_log(env.connected_re(), timeout=20)
    d.wait_for_log(r"error: sensor: cpu: cannot open .*temp1_input", timeout=10)
    obs.wait_lines(lambda l: l.text.startswith("200,c8y_Temperature,"), n=3, timeout=20)
    # reported on the change of state, not on every 100 ms attempt
    assert d.count(r"sensor: cpu: cannot open") == 1
    # the sensor comes back: reported once, and its data flows
    missing.parent.mkdir(parents=True)
    missing.write_text("51234\n")
    d.wait_for_log(r"sensor: cpu: reading again", timeout=10)
    obs.wait_lines(lambda l: l.text.startswith("200,c8y_Cpu,T,51.234,C,"), n=1, timeout=20)
    d.stop()


def test_structured_journal_entries_when_stderr_is_the_journal(env):
    """Under systemd (JOURNAL_STREAM names our stderr) entries go natively
    to the journal with PRIORITY, SYSLOG_IDENTIFIER and EB_SUBSYSTEM; the
    journal socket is the test's own (EB_JOURNAL_SOCKET)."""
    env.start_broker()
    path = str(env.dir / "journal.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    try:
        d = env.daemon(start=False)
        # the harness sends stderr to out_file: that file is "the journal
        # stream", so JOURNAL_STREAM names its device and inode
        d.out_file.parent.mkdir(parents=True, exist_ok=True)
        d.out_file.touch()
        st = os.stat(d.out_file)
        d.env = {**d.env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
                 "EB_JOURNAL_SOCKET": path}
        d.start()
        entries = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                entries.append(sock.recv(65536))
            except socket.timeout:
                pass
            if any(b"mqtt: connected to" in e for e in entries):
                break
        assert entries, "no journal entries"
        parsed = []
        for e in entries:
            head, _, rest = e.partition(b"MESSAGE\n")
            fields = dict(l.split(b"=", 1) for l in head.splitlines() if b"=" in l)
            n = int.from_bytes(rest[:8], "little")
            msg = rest[8:8 + n]
            assert rest[8 + n:] == b"\n", e          # binary-safe framing
            parsed.append((fields, msg))
        connected = [(f, m) for f, m in parsed if m.startswith(b"mqtt: connected to")]
        assert connected, parsed
        f, _ = connected[0]
        assert f[b"PRIORITY"] == b"5"                # notice
        assert f[b"SYSLOG_IDENTIFIER"] == b"edgebridged"
        assert f[b"EB_SUBSYSTEM"] == b"mqtt"
        # and nothing went to stderr meanwhile
        assert "connected to" not in d.output
        assert env.pin.encode() not in b"".join(entries)
        d.stop()
    finally:
        sock.close()
