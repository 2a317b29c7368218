"""Cumulocity in full, end to end: the daemon against the MQTT emulator
(mosquitto + tests/cloud/c8y_plugin.c) and the HTTPS REST emulator
(tests/cloud/c8y_rest.py), sharing one JWT secret.

JWT from s/uat and its renewal at half-life, a 100k backlog drained over
HTTPS while live data flows over MQTT (every row exactly once across both
paths), 401 / 429 / s/uat-silent paths, and the operations."""

from __future__ import annotations

import collections
import re
import signal
import time

import pytest

from harness import wait_until
from harness.accounting import counter_sensors
from harness.backlog import BACKLOG_BASE, FRAGMENT, make_backlog, sensor_names
from harness.c8y_rest import C8yRest

GW = "gw-0001"
LIVE = "live"


@pytest.fixture
def cloud(make_env, tmp_path):
    """An Env on the Cumulocity emulators; returns (env, rest)."""
    made = []

    def factory(jwt_lifetime: int = 3600, rest_kw=None, **env_kw):
        env = make_env(cloud="c8y", cloud_kw={"jwt_lifetime": jwt_lifetime}, **env_kw)
        rest = C8yRest(tmp_path / f"rest{len(made)}", env.pki, secret=env.c8y.secret,
                       **(rest_kw or {})).start()
        made.append(rest)
        env.start_broker()
        return env, rest

    yield factory
    for r in made:
        r.stop()


def config(env, rest, sensors=None, **cloud_keys):
    keys = {"http_url": rest.url, "http_ca_file": rest.ca_file, **cloud_keys}
    return env.write_config(cloud=keys, sensors={} if sensors is None else sensors)


def backlog_values(env, rest):
    """Every backlog value that arrived, over MQTT (200 lines) and HTTPS."""
    got = collections.Counter()
    for line in env.c8y.lines(GW, "200,"):
        f = line.split(",")
        if f[1] == FRAGMENT and f[2] != LIVE:
            got[int(float(f[3]))] += 1
    for m in rest.measurements(GW):
        for series, v in m[FRAGMENT].items():
            if series != LIVE:
                got[int(v["value"])] += 1
    return got


def assert_secret_kept(d, env):
    """No token issued to this device appears in the daemon's output."""
    for rec in env.c8y.tokens(GW):
        assert rec["token"] not in d.output
        assert rec["token"].split(".")[1] not in d.output


# -- the token -------------------------------------------------------------------

def test_token_is_fetched_and_renewed_at_half_life(cloud):
    env, rest = cloud(jwt_lifetime=8)
    make_backlog(env.state_dir / "queue.db", 5000, sensor_names(2))
    config(env, rest)
    d = env.daemon()
    first = env.c8y.wait_token(GW, 1, timeout=20)
    assert first["new"]
    # the platform hands out a new one after half-life: the daemon asks
    # then (not before: asking earlier would return the same token)
    second = env.c8y.wait_token(GW, 2, timeout=20)
    third = env.c8y.wait_token(GW, 3, timeout=20)
    assert second["new"] and third["new"], env.c8y.tokens(GW)
    assert second["jti"] != first["jti"]
    gap = third["t"] - second["t"]
    assert 4 <= gap <= 8, f"renewal every {gap:.1f}s for an 8s token"
    d.wait_for_log(r"new access token via s/uat: valid for 8 s")
    assert_secret_kept(d, env)


def test_malformed_token_answers_are_ignored(cloud):
    env, rest = cloud()
    make_backlog(env.state_dir / "queue.db", 3000, sensor_names(2))
    config(env, rest, token_timeout="2s")
    env.c8y.control(uat="ignore")
    d = env.daemon()
    d.wait_for_log(r"mqtt: connected")
    env.c8y.wait_lines(GW, lambda l: True, timeout=10)
    for junk in ("71,", "71,not.a.jwt", "72,abc", "71,a,b", "71,eyJhbGciOiJIUzI1NiJ9.e30.sig"):
        env.c8y.send_dat(GW, junk)
    d.wait_for_log(r"token: ignored a malformed", count=5, timeout=10)
    env.c8y.control(uat="answer")
    # still alive, and the next real answer is taken (meanwhile MQTT has
    # carried the backlog: no row waits for a token)
    d.wait_for_log(r"new access token via s/uat", timeout=30)
    d.wait_for_log(r"bulk: this device is managed object \d+", timeout=10)
    assert sum(backlog_values(env, rest).values()) == 3000
    assert "not.a.jwt" not in d.output
    assert_secret_kept(d, env)


# -- the drain -------------------------------------------------------------------

def test_backlog_drains_over_https_exactly_once_while_live_data_flows(cloud):
    env, rest = cloud()
    n = 100_000
    make_backlog(env.state_dir / "queue.db", n, sensor_names(4))
    config(env, rest, sensors=counter_sensors([LIVE], interval="50ms"))
    d = env.daemon()
    d.wait_for_log(r"bulk: draining a backlog of about 100000", timeout=15)
    d.wait_for_log(r"bulk: backlog drained over HTTPS: \d+ samples", timeout=90)
    drained_at = time.time()
    got = wait_until(lambda: (lambda g: g if sum(g.values()) >= n else None)(
        backlog_values(env, rest)), 30, what="every backlog row")
    assert len(got) == n and set(got) == set(range(BACKLOG_BASE, BACKLOG_BASE + n))
    dups = {v: c for v, c in got.items() if c > 1}
    assert not dups, f"{len(dups)} rows arrived twice"
    assert rest.total >= n // 2, "most of the backlog should go over HTTPS"
    # live samples kept flowing over MQTT during the drain
    live = [r for r in env.c8y.records("line", GW)
            if r["line"].startswith(f"200,{FRAGMENT},{LIVE},")]
    assert live and live[0]["t"] < drained_at
    # keep-alive: a handful of connections for hundreds of posts
    posts = [r for r in rest.requests if r.method == "POST"]
    assert len(posts) >= rest.total // 2000
    assert rest.connections <= 6, rest.connections


def test_401_fetches_a_new_token_once_then_delivers(cloud):
    env, rest = cloud()
    make_backlog(env.state_dir / "queue.db", 30000, sensor_names(2))
    rest.fail_next(1, 401)
    config(env, rest, bulk_parallel=1)
    d = env.daemon()
    d.wait_for_log(r"refused the token \(HTTP 401\): fetching a new one", timeout=30)
    got = wait_until(lambda: (lambda g: g if sum(g.values()) >= 30000 else None)(
        backlog_values(env, rest)), 60, what="the backlog after a 401")
    assert max(got.values()) == 1 and len(got) == 30000
    # the 401 made the daemon ask s/uat again
    assert len(env.c8y.records("uat", GW)) >= 2


def test_429_with_retry_after_is_honoured(cloud):
    env, rest = cloud()
    make_backlog(env.state_dir / "queue.db", 30000, sensor_names(2))
    rest.fail_next(1, 429, retry_after=3)
    config(env, rest, bulk_parallel=1)
    d = env.daemon()
    d.wait_for_log(r"bulk post failed: HTTP 429 \(with Retry-After\)", timeout=30)
    got = wait_until(lambda: (lambda g: g if sum(g.values()) >= 30000 else None)(
        backlog_values(env, rest)), 60, what="the backlog after a 429")
    assert max(got.values()) == 1 and len(got) == 30000
    posts = [r for r in rest.requests if r.method == "POST"]
    i = next(k for k, r in enumerate(posts) if r.status == 429)
    assert i + 1 < len(posts)
    assert posts[i + 1].time - posts[i].time >= 2.9, "Retry-After: 3 was not honoured"


def test_server_errors_back_off_and_a_bad_batch_is_quarantined(cloud):
    env, rest = cloud()
    make_backlog(env.state_dir / "queue.db", 30000, sensor_names(2))
    rest.fail_next(2, 500)
    config(env, rest, bulk_parallel=1, bulk_batch=500)
    d = env.daemon()
    d.wait_for_log(r"bulk post failed: HTTP 500", timeout=30)
    wait_until(lambda: sum(backlog_values(env, rest).values()) >= 30000, 60,
               what="the backlog after two 500s")
    assert max(backlog_values(env, rest).values()) == 1
    # a 422 is the batch's fault: kept aside and counted, not retried forever
    rest.fail_next(1, 422)
    make_d2 = d.mark()
    d.stop()
    make_backlog(env.state_dir / "queue.db", 30000, sensor_names(2), base=7_000_000)
    d = env.daemon()
    d.wait_for_log(r"refused \d+ measurements with HTTP 422 .*quarantined", timeout=40)
    d.wait_for_log(r"backlog drained over HTTPS", timeout=40)
    assert make_d2 >= 0


def test_silent_s_uat_falls_back_to_the_mtls_token_endpoint(cloud):
    env, rest = cloud()
    make_backlog(env.state_dir / "queue.db", 3000, sensor_names(2))
    env.c8y.control(uat="ignore")
    config(env, rest, token_timeout="1s", token_fallback="yes",
           token_url=f"{rest.mtls_url}/devicecontrol/deviceAccessToken")
    d = env.daemon()
    d.wait_for_log(r"no answer on s/dat to the token request", timeout=20)
    d.wait_for_log(r"s/uat did not answer: asking https://", timeout=30)
    d.wait_for_log(r"new access token via the mTLS token endpoint", timeout=30)
    # the REST API takes that token (the identity lookup needs it)
    d.wait_for_log(r"bulk: this device is managed object \d+", timeout=10)
    assert rest.mtls_connections >= 1
    wait_until(lambda: sum(backlog_values(env, rest).values()) == 3000, 30,
               what="the backlog")
    assert_secret_kept(d, env)


# -- operations ------------------------------------------------------------------

def op_lines(env):
    return [l for l in env.c8y.lines(GW) if re.match(r"50[123],", l)]


def test_supported_operations_are_declared(cloud):
    env, rest = cloud()
    config(env, rest, sensors={**counter_sensors(["valve"], interval="1s",
                                                 waveform="output")},
           relay="valve")
    env.daemon()
    env.c8y.wait_lines(GW, lambda l: l == "114,c8y_Restart,c8y_Configuration,c8y_Relay")
    env.c8y.wait_lines(GW, lambda l: l == "500")


def test_restart_reports_501_then_503_after_coming_back(cloud):
    env, rest = cloud()
    config(env, rest)
    d = env.daemon()
    env.c8y.wait_lines(GW, lambda l: l.startswith("114,"))
    env.c8y.send_operation(GW, f"510,{GW}")
    env.c8y.wait_lines(GW, lambda l: l == "501,c8y_Restart")
    assert d.wait(15) == 75  # the service manager starts us again
    assert (env.state_dir / "c8y-restart").exists()
    d2 = env.daemon()
    env.c8y.wait_lines(GW, lambda l: l == "503,c8y_Restart", timeout=20)
    wait_until(lambda: not (env.state_dir / "c8y-restart").exists(), 10,
               what="the restart record removed")
    assert op_lines(env) == ["501,c8y_Restart", "503,c8y_Restart"]
    d2.stop()


def test_configuration_is_checked_written_and_reloaded(cloud):
    env, rest = cloud()
    config(env, rest)
    d = env.daemon()
    env.c8y.wait_lines(GW, lambda l: l.startswith("114,"))
    dropin = env.dir / "conf.d" / "90-cloud.conf"
    # invalid: refused with the checker's reason, nothing written
    env.c8y.send_operation(GW, f'513,{GW},"[sensor.x]\ndriver = sim\ninterval = soon"')
    line = env.c8y.wait_lines(GW, lambda l: l.startswith("502,c8y_Configuration,"))[0]
    assert "interval" in line and "90-cloud.conf" in line
    assert not dropin.exists()
    # valid: written, reloaded, 503; the new sensor reports
    env.c8y.send_operation(
        GW, f'513,{GW},"[sensor.extra]\ndriver = sim\ninterval = 200ms\n'
            f'fragment = c8y_Extra\nseries = E\nunit = """"x""""\n"')
    env.c8y.wait_lines(GW, lambda l: l == "503,c8y_Configuration", timeout=20)
    assert "[sensor.extra]" in dropin.read_text()
    d.wait_for_log(r"reloaded: 1 sensors")
    env.c8y.wait_lines(GW, lambda l: l.startswith("200,c8y_Extra,E,"), timeout=20)
    assert op_lines(env) == ["501,c8y_Configuration", op_lines(env)[1],
                             "501,c8y_Configuration", "503,c8y_Configuration"]


def test_unknown_operation_and_missing_relay_fail_with_a_reason(cloud):
    env, rest = cloud()
    config(env, rest)
    env.daemon()
    env.c8y.wait_lines(GW, lambda l: l.startswith("114,"))
    env.c8y.send_operation(GW, f'511,{GW},"reboot now"')
    env.c8y.send_operation(GW, f"518,{GW},CLOSED")
    env.c8y.wait_lines(GW, lambda l: l.startswith("502,c8y_Command,"))
    env.c8y.wait_lines(GW, lambda l: l.startswith("502,c8y_Relay,"))
    lines = op_lines(env)
    assert "operation not supported" in lines[0]
    assert "no relay" in lines[1]


def test_relay_drives_the_output_driver(cloud):
    env, rest = cloud()
    config(env, rest, sensors={"sensor.valve": {
        "driver": "sim", "waveform": "output", "interval": "10s", "min": 0, "max": 1,
        "fragment": "c8y_Relay", "series": "state", "unit": ""}}, relay="valve")
    env.daemon()
    env.c8y.wait_lines(GW, lambda l: l.startswith("114,"))
    env.c8y.send_operation(GW, f"518,{GW},CLOSED")
    env.c8y.wait_lines(GW, lambda l: l == "503,c8y_Relay")
    # the new state is measured at once
    env.c8y.wait_lines(GW, lambda l: l.startswith("200,c8y_Relay,state,1,"))
    env.c8y.send_operation(GW, f"518,{GW},OPEN")
    env.c8y.wait_lines(GW, lambda l: l == "503,c8y_Relay", n=2)
    env.c8y.send_operation(GW, f"518,{GW},HALF")
    env.c8y.wait_lines(GW, lambda l: l.startswith("502,c8y_Relay,"))
    assert op_lines(env)[:4] == ["501,c8y_Relay", "503,c8y_Relay",
                                 "501,c8y_Relay", "503,c8y_Relay"]


def test_a_reload_leaves_an_unchanged_relay_as_it_is(cloud):
    """SIGHUP (or a configuration operation) must not flip a relay back to
    its safe default: sections that did not change keep running."""
    env, rest = cloud()
    valve = {"driver": "sim", "waveform": "output", "interval": "300ms", "min": 0, "max": 1,
             "fragment": "c8y_Relay", "series": "state", "unit": ""}
    config(env, rest, sensors={"sensor.valve": valve}, relay="valve")
    d = env.daemon()
    env.c8y.wait_lines(GW, lambda l: l.startswith("114,"))
    env.c8y.send_operation(GW, f"518,{GW},CLOSED")
    env.c8y.wait_lines(GW, lambda l: l == "503,c8y_Relay")
    env.c8y.wait_lines(GW, lambda l: l.startswith("200,c8y_Relay,state,1,"))
    # another sensor added, the valve's section as it was
    config(env, rest, sensors={"sensor.valve": valve, "sensor.extra": {
        "driver": "sim", "interval": "300ms", "fragment": "c8y_Extra", "series": "x"}},
        relay="valve")
    n0 = len(env.c8y.lines(GW, "200,c8y_Relay,"))
    mark = d.mark()
    d.signal(signal.SIGHUP)
    d.wait_for_log(r"reloaded: 2 sensors \(1 unchanged and left running, 1 opened, 0 closed\)",
                   since=mark)
    env.c8y.wait_lines(GW, lambda l: l.startswith("200,c8y_Extra,x,"))
    env.c8y.wait_lines(GW, lambda l: l.startswith("200,c8y_Relay,"), n=n0 + 3)
    after = env.c8y.lines(GW, "200,c8y_Relay,")[n0:]
    assert after and all(l.startswith("200,c8y_Relay,state,1,") for l in after), after
    # a changed section is reopened: back to the safe default (0)
    config(env, rest, sensors={"sensor.valve": {**valve, "interval": "200ms"}}, relay="valve")
    n1 = len(env.c8y.lines(GW, "200,c8y_Relay,"))
    mark = d.mark()
    d.signal(signal.SIGHUP)
    d.wait_for_log(r"reloaded: 1 sensors \(0 unchanged and left running, 1 opened, 2 closed\)",
                   since=mark)
    env.c8y.wait_lines(GW, lambda l: l.startswith("200,c8y_Relay,state,0,"))
    assert d.stop() == 0


def test_operations_queued_behind_a_restart_are_not_lost(cloud):
    env, rest = cloud()
    config(env, rest)
    d = env.daemon()
    env.c8y.wait_lines(GW, lambda l: l.startswith("114,"))
    env.c8y.send_operation(GW, f'510,{GW}\n511,{GW},"x"')
    assert d.wait(15) == 75
    env.daemon()
    env.c8y.wait_lines(GW, lambda l: l == "503,c8y_Restart", timeout=20)
    env.c8y.wait_lines(GW, lambda l: l.startswith("502,c8y_Command,"), timeout=20)


def test_last_will_tells_the_platform_the_device_is_gone(cloud):
    env, rest = cloud()
    config(env, rest)
    obs = env.observer()
    d = env.daemon()
    env.c8y.wait_lines(GW, lambda l: l.startswith("117,"))
    d.kill9()  # no DISCONNECT: the broker publishes the will
    obs.wait_lines(lambda l: l.text == '400,c8y_ConnectionEvent,"Device connection was lost."',
                   timeout=20)


@pytest.mark.parametrize("status,logged", [
    (413, r"HTTP 413: the platform wants smaller posts; now 500 measurements each"),
    (403, r"HTTP 403: not this device's to write; looking the device up again"),
])
def test_413_halves_the_batch_and_403_looks_the_device_up_again(cloud, status, logged):
    env, rest = cloud()
    make_backlog(env.state_dir / "queue.db", 30000, sensor_names(2))
    rest.fail_next(1, status)
    config(env, rest, bulk_parallel=1)
    d = env.daemon()
    d.wait_for_log(logged, timeout=30)
    got = wait_until(lambda: (lambda g: g if sum(g.values()) >= 30000 else None)(
        backlog_values(env, rest)), 60, what=f"the backlog after a {status}")
    assert max(got.values()) == 1 and len(got) == 30000
    posts = [r for r in rest.requests if r.method == "POST"]
    i = next(k for k, r in enumerate(posts) if r.status == status)
    if status == 413:
        after = [r.n_measurements for r in posts[i + 1:]]
        assert after and max(after) == 500, after[:5]
    else:
        lookups = [r for r in rest.requests if r.method == "GET"]
        assert len(lookups) >= 2, "the device was not looked up again"
