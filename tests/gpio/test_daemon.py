"""edgebridged's GPIO drivers against a real kernel (gpio-sim in the VM),
end to end: lines driven through the simulator become SmartREST lines at a
real mosquitto broker with require_certificate (the Cumulocity emulator
plugin), with the device key on a SoftHSM2 token in a tmpfs directory.

The configurations are the drivers' contract (README, [sensor.*]):
  gpio-input    chip, line | lines, bias, active_low, debounce, report = event | measurement, event_type
  gpio-counter  chip, line, edge, debounce, scale, interval  (total + rate; total kept in state_dir)
  gpio-output   chip, line, default = 0 | 1 | keep, active_low  (relay = NAME for operation 518)
  dht22         chip, line, interval, model
A test whose driver is not in the binary yet is SKIPPED with "waits for
driver X" (GPIO_REQUIRE_DRIVERS=1: fails instead)."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

import simgpio
from harness import expect, wait_until

GW = "gw-0001"
EVENT = "edgebridge_GpioChange"


# -- fixtures and helpers ------------------------------------------------------

@pytest.fixture
def gateway(sim_chip, make_env, edgebridged):
    """start(sensors, relay=None) -> (env, daemon) connected to the emulated
    Cumulocity (sim_chip comes first so chips outlive the daemons)."""
    def start(sensors, relay=None, wait_connected=True, **cloud):
        env = make_env(cloud="c8y")
        env.start_broker()
        keys = {"bulk": "no", **cloud}
        if relay:
            keys["relay"] = relay
        env.write_config(sensors=sensors, cloud=keys,
                         gateway={"log_level": "debug"})
        d = env.daemon()
        if wait_connected:
            d.wait_for_log(env.connected_re(), timeout=60)
        return env, d
    return start


def events(env, etype=EVENT, sensor=None):
    out = []
    for line in env.c8y.lines(GW, "400,"):
        e = expect.parse_event(line)
        if e and e.type == etype and (sensor is None or e.text.startswith(f"sensor {sensor}:")):
            out.append(e)
    return out


def edge_events(env, sensor):
    """(line, level, time) of the sensor's change events, not the
    '(current state)' reports."""
    out = []
    for e in events(env, sensor=sensor):
        m = re.search(r"line (\d+) is (\d)(.*)$", e.text)
        assert m, e
        if "current state" not in m[3]:
            out.append((int(m[1]), int(m[2]), e.time))
    return out


def wait_edges(env, sensor, n, timeout=30):
    return wait_until(lambda: len(edge_events(env, sensor)) >= n and edge_events(env, sensor),
                      timeout, what=f"{n} change events of {sensor}")


def measurements(env, fragment, series=None):
    out = []
    for line in env.c8y.lines(GW, "200,"):
        m = expect.parse_measurement(line)
        if m and m.fragment == fragment and (series is None or m.series == series):
            out.append(m)
    return out


def inp(chip, line, **kw):
    return {"driver": "gpio-input", "chip": chip.label, "line": line, "bias": "as-is",
            "debounce": "0", "report": "event", **kw}


# -- gpio-input ----------------------------------------------------------------

def test_edges_arrive_as_events_in_order_with_increasing_times(need, sim_chip, gateway):
    need("gpio-input")
    chip = sim_chip(8)
    chip.pull(3, 0)
    env, d = gateway({"sensor.door": inp(chip, 3)})
    env.c8y.wait_lines(GW, lambda l: "sensor door: line 3 is 0 (current state)" in l, timeout=30)
    chip.toggle(3, 8, period=0.05, start_level=0)
    got = wait_edges(env, "door", 8)
    assert [lv for _, lv, _ in got] == [1, 0] * 4, got
    times = [t for _, _, t in got]
    # kernel timestamps, 50 ms apart: strictly increasing at ms precision
    assert all(b > a for a, b in zip(times, times[1:])), times
    assert all(ln == 3 for ln, _, _ in got)
    time.sleep(1)
    assert len(edge_events(env, "door")) == 8, "more events than edges"


def test_bias_and_active_low_are_applied_by_the_kernel(need, sim_chip, gateway):
    need("gpio-input")
    chip = sim_chip(8)
    chip.pull(4, 0)
    chip.pull(5, 0)
    env, d = gateway({"sensor.up": inp(chip, 4, bias="pull-up"),
                      "sensor.inv": inp(chip, 5, active_low="yes")})
    env.c8y.wait_lines(GW, lambda l: "sensor up: line 4 is 1 (current state)" in l, timeout=30)
    env.c8y.wait_lines(GW, lambda l: "sensor inv: line 5 is 1 (current state)" in l, timeout=30)
    assert chip.get_pull(4) == "pull-up"  # the request's bias reached the simulator
    chip.pull(5, 1)                       # physically high = logically 0
    got = wait_edges(env, "inv", 1)
    assert got[0][:2] == (5, 0)


def test_debounce_drops_glitches_shorter_than_the_window(need, sim_chip, gateway):
    need("gpio-input")
    chip = sim_chip(8)
    chip.pull(2, 0)
    env, d = gateway({"sensor.contact": inp(chip, 2, debounce="300ms")})
    env.c8y.wait_lines(GW, lambda l: "sensor contact: line 2 is 0 (current state)" in l,
                       timeout=30)
    for _ in range(3):          # glitches: high for ~10 ms, well inside 300 ms
        chip.pull(2, 1)
        time.sleep(0.01)
        chip.pull(2, 0)
        time.sleep(0.6)
    assert edge_events(env, "contact") == []
    chip.toggle(2, 5, period=0.01, start_level=0)   # a bouncing close: ends high
    time.sleep(1.0)
    chip.toggle(2, 3, period=0.01, start_level=1)   # a bouncing open: ends low
    got = wait_edges(env, "contact", 2)
    time.sleep(1.0)
    got = edge_events(env, "contact")
    assert [lv for _, lv, _ in got] == [1, 0], got
    assert got[0][2] < got[1][2]


def test_several_lines_as_measurements(need, sim_chip, gateway):
    need("gpio-input")
    chip = sim_chip(8)
    chip.pull(3, 0)
    chip.pull(4, 1)
    env, d = gateway({"sensor.contacts": {
        "driver": "gpio-input", "chip": chip.label, "lines": "3,4", "bias": "as-is",
        "report": "measurement", "fragment": "c8y_Contacts", "series": "c"}})
    wait_until(lambda: {(m.series, m.value) for m in measurements(env, "c8y_Contacts")}
               >= {("c_3", 0), ("c_4", 1)}, 30, what="the current state of both lines")
    n3 = len(measurements(env, "c8y_Contacts", "c_3"))
    chip.pull(3, 1)
    chip.pull(4, 0)
    wait_until(lambda: len(measurements(env, "c8y_Contacts", "c_3")) > n3
               and measurements(env, "c8y_Contacts", "c_3")[-1].value == 1
               and measurements(env, "c8y_Contacts", "c_4")[-1].value == 0, 30,
               what="both changes as measurements")


def test_busy_and_missing_lines_fail_alone(need, sim_chip, gateway):
    need("gpio-input")
    chip = sim_chip(8)
    chip.pull(3, 0)
    holder = subprocess.Popen(["gpioset", "-m", "signal", chip.label, "1=1"])
    try:
        wait_until(lambda: "gpioset" in subprocess.run(
            ["gpioinfo", chip.label], stdout=subprocess.PIPE, text=True).stdout, 10,
            what="gpioset holding line 1")
        env, d = gateway({"sensor.door": inp(chip, 3),
                          "sensor.held": inp(chip, 1),
                          "sensor.noline": inp(chip, 40),
                          "sensor.nochip": {**inp(chip, 0), "chip": "no-such-chip"}})
        d.wait_for_log(r"held: cannot open: .*line 1 of .* is busy: held by 'gpioset'",
                       timeout=30)
        d.wait_for_log(r"noline: cannot open: .*has no line 40", timeout=30)
        d.wait_for_log(r"nochip: cannot open: .*no GPIO chip 'no-such-chip'", timeout=30)
        for name in ("held", "noline", "nochip"):   # a major alarm each, at the cloud
            env.c8y.wait_lines(GW, lambda l, n=name: l.startswith(
                f"302,edgebridge_SensorFailed_{n},"), timeout=30)
        # the good one goes on
        chip.pull(3, 1)
        assert wait_edges(env, "door", 1)[0][:2] == (3, 1)
        # the holder goes away: "held" recovers by itself (backoff) and works
        holder.terminate()
        holder.wait(10)
        env.c8y.wait_lines(GW, lambda l: l.startswith("400,edgebridge_SensorRecovered,")
                           and "sensor held:" in l, timeout=90)
        env.c8y.wait_lines(GW, lambda l: "sensor held: line 1 is" in l, timeout=30)
        n = len(edge_events(env, "held"))
        level = chip.value(1)
        chip.pull(1, 1 - level)
        wait_until(lambda: len(edge_events(env, "held")) > n, 30, what="held reporting")
        assert d.running
        # an alarm once, not once per retry
        assert len([l for l in env.c8y.lines(GW, "302,edgebridge_SensorFailed_nochip,")]) == 1
    finally:
        holder.kill()
        holder.wait(10)


# -- gpio-output (relay) -----------------------------------------------------------

def test_output_default_relay_operation_and_safe_state_at_shutdown(need, sim_chip, gateway):
    need("gpio-output")
    chip = sim_chip(8)
    trace = simgpio.GpioTrace()
    base = simgpio.chip_base(chip.label)
    try:
        out = {"driver": "gpio-output", "chip": chip.label, "interval": "30s"}
        env, d = gateway({"sensor.valve": {**out, "line": 5, "default": 0,
                                           "fragment": "c8y_Relay", "series": "state"},
                          "sensor.lamp": {**out, "line": 6, "default": 1},
                          "sensor.siren": {**out, "line": 7, "default": 1,
                                           "active_low": "yes"}},
                         relay="valve")
        wait_until(lambda: (chip.value(5), chip.value(6), chip.value(7)) == (0, 1, 0), 30,
                   what="the default states at start")
        env.c8y.wait_lines(GW, lambda l: l == "114,c8y_Restart,c8y_Configuration,c8y_Relay",
                           timeout=30)
        env.c8y.send_operation(GW, f"518,{GW},CLOSED")
        env.c8y.wait_lines(GW, lambda l: l == "503,c8y_Relay", timeout=30)
        assert chip.value(5) == 1
        env.c8y.wait_lines(GW, lambda l: l.startswith("200,c8y_Relay,state,1,"), timeout=30)
        env.c8y.send_operation(GW, f"518,{GW},OPEN")
        env.c8y.wait_lines(GW, lambda l: l == "503,c8y_Relay", n=2, timeout=30)
        assert chip.value(5) == 0
        env.c8y.send_operation(GW, f"518,{GW},CLOSED")
        env.c8y.wait_lines(GW, lambda l: l == "503,c8y_Relay", n=3, timeout=30)
        assert chip.value(5) == 1
        assert d.stop() == 0
        # gpio-sim puts a released line back to its pull, so the kernel's
        # trace is the witness of the level driven before letting go
        sets5 = trace.sets(base + 5)
        assert sets5 and sets5[-1] == 0, f"valve: last level driven {sets5}"
        assert sets5[:1] == [0], f"valve: first level {sets5}"
        assert trace.sets(base + 6)[-1] == 1
        assert trace.sets(base + 7)[-1] == 0   # default 1, active low
    finally:
        trace.close()


def test_output_keep_takes_the_level_found(need, sim_chip, gateway):
    need("gpio-output")
    chip = sim_chip(8)
    chip.pull(2, 1)
    env, d = gateway({"sensor.k": {"driver": "gpio-output", "chip": chip.label, "line": 2,
                                   "default": "keep", "interval": "30s"}})
    d.wait_for_log(r"running as '", timeout=30)
    time.sleep(1)
    assert chip.value(2) == 1
    chip.pull(2, 0)        # an output does not follow the pull
    time.sleep(0.2)
    assert chip.value(2) == 1


# -- gpio-counter ------------------------------------------------------------------

def counter(chip, line, **kw):
    return {"driver": "gpio-counter", "chip": chip.label, "line": line, "edge": "rising",
            "debounce": "0", "scale": 1, "interval": "1s", "fragment": "c8y_Meter",
            "series": "m", **kw}


def totals(env):
    """Values of the counter's total series (named '*total*' or the sensor's
    series itself; reconcile here with the driver's naming)."""
    return [m.value for m in measurements(env, "c8y_Meter")
            if "total" in m.series or m.series == "m"]


def test_counter_counts_exactly_n_pulses(need, sim_chip, gateway):
    need("gpio-counter")
    chip = sim_chip(8)
    chip.pull(4, 0)
    env, d = gateway({"sensor.meter": counter(chip, 4)})
    wait_until(lambda: totals(env), 30, what="a first total")
    chip.pulses(4, 25, high=0.005, low=0.005)
    wait_until(lambda: totals(env) and totals(env)[-1] == 25, 30,
               what="total 25 after 25 pulses")
    time.sleep(2.5)
    assert totals(env)[-1] == 25
    rates = [m for m in measurements(env, "c8y_Meter") if "rate" in m.series]
    assert rates, "no rate series"


def test_counter_total_survives_a_restart_exactly(need, sim_chip, gateway):
    need("gpio-counter")
    chip = sim_chip(8)
    chip.pull(4, 0)
    env, d = gateway({"sensor.meter": counter(chip, 4)})
    wait_until(lambda: totals(env), 30, what="a first total")
    chip.pulses(4, 10, high=0.005, low=0.005)
    wait_until(lambda: totals(env)[-1] == 10, 30, what="total 10")
    assert d.stop() == 0
    assert any(env.state_dir.iterdir())
    d2 = env.daemon()
    d2.wait_for_log(env.connected_re(), timeout=60)
    n = len(totals(env))
    wait_until(lambda: len(totals(env)) > n, 30, what="a total after the restart")
    assert totals(env)[-1] == 10, "lost or double-counted across the restart"
    chip.pulses(4, 7, high=0.005, low=0.005)
    wait_until(lambda: totals(env)[-1] == 17, 30, what="total 17")
    time.sleep(2.5)
    assert totals(env)[-1] == 17


# -- dht22 -----------------------------------------------------------------------

def test_dht22_without_a_sensor_fails_alone(need, sim_chip, gateway):
    """gpio-sim cannot answer the DHT22 protocol: a line with nothing on it
    must be a clear error for that sensor while the others go on."""
    need("dht22", "gpio-input")
    chip = sim_chip(8)
    chip.pull(3, 0)
    env, d = gateway({"sensor.room": {"driver": "dht22", "chip": chip.label, "line": 6,
                                      "interval": "2s"},
                      "sensor.door": inp(chip, 3)})
    env.c8y.wait_lines(GW, lambda l: "sensor room" in l or "SensorFailed_room" in l,
                       timeout=60)
    d.wait_for_log(r"room", timeout=30)
    chip.pull(3, 1)
    assert wait_edges(env, "door", 1)[0][:2] == (3, 1)
    assert d.running
