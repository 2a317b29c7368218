"""Walking skeleton: sim sensors -> edgebridged -> mutual-TLS MQTT broker."""

from __future__ import annotations

import datetime as dt
import signal
import time

import pytest

from harness import (DEFAULT_GATEWAY_NAME, DEFAULT_SENSORS, Pki, expect, run_edgebridged,
                     wait_until)

START_TIMEOUT = 20      # daemon start -> "connected"
DATA_TIMEOUT = 20       # lines to arrive

EXPECTED_SERIES = {
    (s["fragment"], s["series"]): s for s in DEFAULT_SENSORS.values()
}


def is_measurement(line) -> bool:
    return line.text.startswith("200,")


def assert_no_pin(env, *texts):
    for t in texts:
        assert env.pin not in t, "the PIN leaked into the daemon's output"


# -- happy path ------------------------------------------------------------------

def test_happy_path_two_sim_sensors(env):
    env.start_broker()
    obs = env.observer()
    d = env.daemon()
    d.wait_for_log(env.connected_re(), timeout=START_TIMEOUT)

    # both sensors deliver
    for (fragment, series) in EXPECTED_SERIES:
        obs.wait_lines(lambda l, f=fragment, s=series: l.text.startswith(f"200,{f},{s},"),
                       n=2, timeout=DATA_TIMEOUT)
    lines = obs.snapshot()
    texts = [l.text for l in lines]

    # the broker saw the gateway's client id, authenticated by its certificate CN
    gw = [c for c in env.broker.clients() if c.client_id == env.gateway_id]
    assert gw, f"no MQTT client {env.gateway_id!r}: {env.broker.clients()}"
    assert all(c.username == env.gateway_id for c in gw)
    assert {c.client_id for c in env.broker.clients()} <= {env.gateway_id, "observer"}

    # bootstrap first: 100, then 110 and 117, all before the first measurement
    first_200 = next(i for i, t in enumerate(texts) if t.startswith("200,"))
    boot = texts[:first_200]
    codes = [t.split(",", 1)[0] for t in boot]
    assert codes and codes[0] == "100", f"first lines: {texts[:5]}"
    assert "110" in codes and "117" in codes, f"bootstrap lines: {boot}"
    m100 = expect.DEVICE_CREATION_RE.match(boot[0])
    assert m100 and m100["name"] == DEFAULT_GATEWAY_NAME, boot[0]
    m110 = next(expect.HARDWARE_RE.match(t) for t in boot if t.startswith("110,"))
    assert m110 and m110["serial"] and m110["version"], boot
    m117 = next(expect.REQUIRED_INTERVAL_RE.match(t) for t in boot if t.startswith("117,"))
    assert m117 and int(m117["minutes"]) > 0, boot

    # every measurement line is well-formed, known, in range and timely
    for line in lines[first_200:]:
        assert line.topic == expect.TOPIC_UP
        if not is_measurement(line):
            continue
        m = expect.parse_measurement(line.text)
        assert m is not None, f"malformed measurement line {line.text!r}"
        spec = EXPECTED_SERIES.get((m.fragment, m.series))
        assert spec is not None, f"unexpected series in {line.text!r}"
        assert m.unit == spec["unit"], line.text
        lo, hi = float(spec["min"]), float(spec["max"])
        slack = (hi - lo) * 0.01
        assert lo - slack <= m.value <= hi + slack, line.text
        received = dt.datetime.fromtimestamp(line.time, dt.timezone.utc)
        assert abs((received - m.time).total_seconds()) < 10, \
            f"time {m.time} far from receive time {received}: {line.text!r}"

    assert d.running
    rc = d.stop()
    assert rc == expect.EXIT_OK, d.output
    assert_no_pin(env, d.output)


def test_hwmon_sensor_reads_millidegrees(env):
    temp = env.dir / "temp1_input"
    temp.write_text("45500\n")
    env.write_config(sensors={"sensor.cpu": {
        "driver": "hwmon", "path": temp, "interval": "500ms",
        "fragment": "c8y_CPUTemperature", "series": "T", "unit": "C"}})
    env.start_broker()
    obs = env.observer()
    d = env.daemon()
    line = obs.wait_lines(is_measurement, n=1, timeout=DATA_TIMEOUT)[0]
    m = expect.parse_measurement(line.text)
    assert (m.fragment, m.series, m.unit) == ("c8y_CPUTemperature", "T", "C"), line.text
    assert m.value == pytest.approx(45.5), line.text
    temp.write_text("51000\n")
    obs.wait_lines(lambda l: is_measurement(l) and
                   expect.parse_measurement(l.text).value == pytest.approx(51.0),
                   timeout=DATA_TIMEOUT)
    assert d.stop() == expect.EXIT_OK, d.output


# -- broker restart ----------------------------------------------------------------

def test_broker_restart_reconnects_and_data_continues(env):
    env.start_broker()
    obs = env.observer()
    d = env.daemon()
    d.wait_for_log(env.connected_re(), timeout=START_TIMEOUT)
    obs.wait_lines(is_measurement, n=2, timeout=DATA_TIMEOUT)

    mark = d.mark()
    connects = obs.connects
    env.broker.restart(down_for=1.0)
    restarted = dt.datetime.now(dt.timezone.utc)
    restarted_at = time.time()

    d.wait_for_log(expect.log_re("disconnected"), since=mark, timeout=20)
    d.wait_for_log(env.connected_re(), since=mark, timeout=30)
    obs.wait_subscribed(connects + 1, timeout=20)

    def fresh(line):
        m = expect.parse_measurement(line.text)
        return line.time > restarted_at and m is not None and m.time >= restarted
    obs.wait_lines(fresh, n=2, timeout=DATA_TIMEOUT)
    assert env.broker.wait_client(env.gateway_id, count=2, timeout=5)
    assert d.running
    assert d.stop() == expect.EXIT_OK, d.output


# -- server authentication ---------------------------------------------------------

def test_wrong_server_ca_is_refused(make_env, edgebridged, tmp_path):
    other = Pki(tmp_path / "other-ca", name="untrusted")
    env = make_env(server=other.server_cert())
    # the daemon trusts our root; the broker presents a cert from another root
    env.write_config(cloud={"ca_file": env.pki.root_file})
    env.start_broker()
    obs = env.observer()                    # the observer trusts the other root
    log_mark = env.broker.log_mark()
    d = env.daemon()

    verify_failed = expect.log_re("server_verify_failed")
    d.wait_for_log(verify_failed, timeout=START_TIMEOUT)
    # it keeps retrying: a second TLS attempt reaches the broker...
    try:
        wait_until(lambda: env.broker.connection_attempts(log_mark) >= 2, 20,
                   what="a second connection attempt")
    except TimeoutError:
        pytest.fail(f"daemon did not retry; broker log:\n{env.broker.log[log_mark:]}")
    time.sleep(1)
    # ...but the error is logged once, not per retry
    assert d.count(verify_failed) == 1, d.output
    assert d.running, d.output
    assert env.gateway_id not in env.broker.client_ids()
    assert obs.texts() == []
    assert d.stop() == expect.EXIT_OK, d.output


def test_server_hostname_mismatch_is_refused(make_env, edgebridged, pki):
    env = make_env(server=pki.server_cert(cn="wrong.example", ips=(),
                                          dns=("wrong.example",)))
    env.write_config()          # host = 127.0.0.1, trusted CA
    env.start_broker()
    obs = env.observer(check_hostname=False)
    log_mark = env.broker.log_mark()
    d = env.daemon()
    mismatch = expect.log_re("hostname_mismatch")
    d.wait_for_log(mismatch, timeout=START_TIMEOUT)
    wait_until(lambda: env.broker.connection_attempts(log_mark) >= 2, 20,
               what="a second connection attempt")
    time.sleep(1)
    assert d.count(mismatch) == 1, d.output
    assert d.running, d.output
    assert env.gateway_id not in env.broker.client_ids()
    assert obs.texts() == []
    assert d.stop() == expect.EXIT_OK, d.output


# -- signals / CLI -------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_and_promptly(env, sig):
    env.start_broker()
    d = env.daemon()
    d.wait_for_log(env.connected_re(), timeout=START_TIMEOUT)
    t0 = time.monotonic()
    d.signal(sig)
    rc = d.wait(timeout=10)
    assert rc == expect.EXIT_OK, d.output
    assert time.monotonic() - t0 < 5, "stop took too long"


def test_sigterm_while_broker_down(env):
    """No broker at all: the daemon retries, and still stops at once on SIGTERM."""
    d = env.daemon()
    time.sleep(2)
    assert d.running, d.output
    t0 = time.monotonic()
    assert d.stop() == expect.EXIT_OK, d.output
    assert time.monotonic() - t0 < 5


def test_broker_started_late_daemon_connects(env):
    """Broker down at start: the daemon keeps retrying and connects once it is up."""
    d = env.daemon()
    time.sleep(3)
    assert d.running, d.output
    env.start_broker()
    obs = env.observer()
    d.wait_for_log(env.connected_re(), timeout=30)
    obs.wait_lines(is_measurement, n=2, timeout=DATA_TIMEOUT)
    assert d.stop() == expect.EXIT_OK, d.output


def test_version(edgebridged):
    r = run_edgebridged(["--version"], binary=edgebridged)
    assert r.returncode == expect.EXIT_OK, r.stderr
    assert r.stdout.strip() or r.stderr.strip()


def test_usage_error(edgebridged):
    r = run_edgebridged(["--no-such-option"], binary=edgebridged)
    assert r.returncode == expect.EXIT_USAGE, (r.stdout, r.stderr)
