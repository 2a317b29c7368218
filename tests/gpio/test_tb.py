"""The ThingsBoard MQTT profile against a real kernel (gpio-sim in the VM):
the daemon with `profile = thingsboard` at the ThingsBoard emulator
(mosquitto + tests/cloud/tb_plugin.c, harness.tb.TbCloud), X.509 client
certificate, the key on a SoftHSM2 token.

- Server-side RPC to a GPIO output through the driver interface: `[cloud]
  gpio_pins` maps RPC pin numbers to gpio-output sensors; setGpio drives the
  simulator's line (read in its `value` file), the answer is the state read
  back from the driver, getGpio reads it; an unmapped pin is answered with
  an error object.
- gpio-input edges as ThingsBoard telemetry, stamped with the kernel's edge
  timestamps (not the time the daemon read them) and with the right value.

No latency is asserted: waits are generous (ASan daemon under TCG)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from harness import wait_until

GW = "gw-0001"
WAIT = 60  # s, for anything the daemon does (TCG, ASan)


@pytest.fixture
def tb_gateway(sim_chip, make_env, edgebridged):
    """start(sensors, **cloud_keys) -> (env, daemon) at the ThingsBoard
    emulator, subscribed to server-side RPCs (sim_chip comes first so chips
    outlive the daemons)."""
    def start(sensors, **cloud_keys):
        env = make_env(cloud="tb")
        env.start_broker()
        env.write_config(sensors=sensors, cloud=cloud_keys,
                         gateway={"log_level": "debug"})
        d = env.daemon()
        env.tb.wait_record("subscribe", GW,
                           lambda r: r["topic"].startswith("v1/devices/me/rpc/request"),
                           timeout=WAIT)
        return env, d
    return start


def rpc(env, rpc_id, method, **params):
    env.tb.rpc(GW, rpc_id, {"method": method, "params": params})
    return env.tb.wait_rpc_response(GW, rpc_id, timeout=WAIT)


def values(env, key):
    """(ts, value) of every telemetry object carrying `key`, in order."""
    return [(o["ts"], o["values"][key]) for o in env.tb.telemetry(GW)
            if key in o.get("values", {})]


def now_ms() -> int:
    return int(time.time() * 1000)


def process_state(pid: int) -> str:
    """R, S, T (stopped), ... from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


# -- server-side RPC to gpio-output ----------------------------------------------

def test_rpc_set_and_get_gpio_drive_the_simulated_line(need, sim_chip, tb_gateway):
    need("gpio-output")
    chip = sim_chip(8)
    out = {"driver": "gpio-output", "chip": chip.label, "interval": "30s"}
    # RPC pin numbers are not line offsets: the mapping is the config's
    env, d = tb_gateway({"sensor.relay": {**out, "line": 5, "default": 0},
                         "sensor.siren": {**out, "line": 6, "default": 0,
                                          "active_low": "yes"}},
                        gpio_pins="7:relay,8:siren")
    wait_until(lambda: (chip.value(5), chip.value(6)) == (0, 1), WAIT,
               what="the default states (siren: 0, active low)")

    assert rpc(env, 1, "setGpio", pin=7, enabled=True) == {"pin": 7, "enabled": True}
    # the driver wrote the line before the answer went out
    assert chip.value(5) == 1
    assert chip.value(6) == 1  # the other output untouched
    assert rpc(env, 2, "getGpio", pin=7) == {"pin": 7, "enabled": True}
    # the read-back is telemetry too
    env.tb.wait_telemetry(GW, lambda o: o["values"].get("relay.relay") == 1, timeout=WAIT)

    assert rpc(env, 3, "setGpio", pin=7, enabled=False) == {"pin": 7, "enabled": False}
    assert chip.value(5) == 0
    assert rpc(env, 4, "getGpio", pin=7) == {"pin": 7, "enabled": False}

    # logical, not physical: enabling an active-low output drives it low
    assert rpc(env, 5, "setGpio", pin=8, enabled=True) == {"pin": 8, "enabled": True}
    assert chip.value(6) == 0
    assert rpc(env, 6, "getGpio") == {"7": False, "8": True}

    # an unmapped pin is answered with an error object, and nothing moves
    err = rpc(env, 7, "setGpio", pin=5, enabled=True)
    assert set(err) == {"error"} and "no GPIO pin 5" in err["error"], err
    err = rpc(env, 8, "getGpio", pin=9)
    assert set(err) == {"error"} and "no GPIO pin 9" in err["error"], err
    assert (chip.value(5), chip.value(6)) == (0, 0)
    assert d.running
    assert not env.tb.records("invalid") and not env.tb.records("acl_denied")
    assert d.stop(timeout=30) == 0


# -- gpio-input edges as telemetry -------------------------------------------------

def test_input_edges_are_telemetry_with_the_kernel_timestamps(need, sim_chip, tb_gateway):
    """The daemon is stopped (SIGSTOP) while the edges happen and resumed
    seconds later: each edge's ts must fall in the window of its own pull
    write, which only the kernel's event timestamp can do."""
    need("gpio-input")
    chip = sim_chip(8)
    chip.pull(3, 0)
    chip.pull(4, 0)
    inp = {"driver": "gpio-input", "chip": chip.label, "bias": "as-is", "debounce": "0"}
    env, d = tb_gateway({"sensor.door": {**inp, "line": 3, "report": "measurement",
                                         "series": "open"},
                         "sensor.bell": {**inp, "line": 4, "report": "event"}})
    # the level at start (and on connect), stamped when reported
    env.tb.wait_telemetry(GW, lambda o: o["values"].get("door.open") == 0, timeout=WAIT)
    env.tb.wait_telemetry(GW, lambda o: o["values"].get("event_text")
                          == "sensor bell: line 4 is 0 (current state)", timeout=WAIT)
    d.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: process_state(d.pid) == "T", WAIT, what="the daemon stopped")
        windows = []   # (line, level, ms before the write, ms after it)
        for line, level in ((3, 1), (4, 1), (3, 0), (3, 1)):
            before = now_ms()
            chip.pull(line, level)
            windows.append((line, level, before, now_ms()))
            time.sleep(1.5)
        time.sleep(2)
        resumed = now_ms()
    finally:
        d.signal(signal.SIGCONT)
    first = windows[0][2]

    def edges():
        # door: the state reports (at start, on connect) are stamped when
        # made, before `first`; bell: they say "(current state)"
        door = [(ts, v) for ts, v in values(env, "door.open") if ts >= first]
        bell = [(ts, v) for ts, v in values(env, "event_text") if "current state" not in v]
        return door, bell

    wait_until(lambda: len(edges()[0]) >= 3 and len(edges()[1]) >= 1, WAIT,
               what="3 door edges and 1 bell edge as telemetry")
    time.sleep(1)  # nothing more may come
    door, bell = edges()
    assert [v for _, v in door] == [1, 0, 1], door
    assert [v for _, v in bell] == ["sensor bell: line 4 is 1"], bell
    bell_obj = [o for o in env.tb.telemetry(GW) if o["values"].get("event_text") == bell[0][1]]
    assert bell_obj[0]["values"]["event"] == "edgebridge_GpioChange", bell_obj
    stamped = sorted([(ts, 3) for ts, _ in door] + [(ts, 4) for ts, _ in bell])
    for (ts, line), (wline, level, before, after) in zip(stamped, windows):
        assert line == wline, (stamped, windows)
        # the edge's own time: at or after its write began, well before
        # the next write (1.5 s later) and the daemon's resumption;
        # the upper margin only absorbs the simulator's irq_work
        assert before <= ts <= after + 1000, (ts, line, level, before, after)
        assert ts < resumed - 1000, (ts, resumed)
    assert d.running
    assert not env.tb.records("invalid")
    assert d.stop(timeout=30) == 0
