"""ThingsBoard over MQTT, end to end: the daemon against the emulator
(mosquitto + tests/cloud/tb_plugin.c) with an X.509 client certificate.

Telemetry with the right ts and values; a backlog as arrays packed to the
session's limit (getSessionLimits), every row exactly once; client and
shared attributes (an interval applied in place); server-side RPC to a GPIO
output through the driver interface; malformed RPC and attribute JSON
answered or ignored without a crash; both X.509 provisioning variants and
the refusal of an unknown certificate."""

from __future__ import annotations

import collections
import time

import pytest

from harness import wait_until
from harness.backlog import BACKLOG_BASE, make_backlog, sensor_names

GW = "gw-0001"

RELAY = {"driver": "sim", "waveform": "output", "interval": "1s",
         "fragment": "c8y_Relay", "series": "state", "unit": ""}
BOILER = {"driver": "sim", "interval": "500ms", "fragment": "c8y_Temperature",
          "series": "T", "unit": "C", "waveform": "sine", "min": 20, "max": 80,
          "period": "60s", "seed": 1}


@pytest.fixture
def tb(make_env):
    def factory(sensors=None, cloud_keys=None, **env_kw):
        env = make_env(cloud="tb", **env_kw)
        env.start_broker()
        env.write_config(cloud=dict(cloud_keys or {}),
                         sensors={"sensor.boiler": BOILER} if sensors is None else sensors)
        return env
    return factory


def test_telemetry_has_the_samples_ts_and_values(tb):
    env = tb()
    t0 = int(time.time() * 1000)
    d = env.daemon()
    objs = env.tb.wait_telemetry(GW, lambda o: "boiler.T" in o.get("values", {}), n=3)
    for o in objs:
        assert set(o) == {"ts", "values"}
        assert t0 - 1000 <= o["ts"] <= int(time.time() * 1000)
        assert 20 <= o["values"]["boiler.T"] <= 80
    assert [o["ts"] for o in objs] == sorted(o["ts"] for o in objs)
    # client attributes on connect: firmware, version, the sensor list
    attrs = env.tb.wait_record("attributes", GW)["data"]
    assert attrs["current_fw_title"] == "edgebridge"
    assert attrs["current_fw_version"]
    assert attrs["sensors"][0]["key"] == "boiler.T"
    # the session's limit was asked for, and nothing was refused
    env.tb.wait_record("client_rpc", GW, lambda r: r["data"]["method"] == "getSessionLimits")
    assert not env.tb.records("invalid") and not env.tb.records("acl_denied")
    d.stop()


def test_backlog_goes_as_arrays_within_the_session_limit(tb):
    n, names = 20000, sensor_names(4)
    env = tb(sensors={}, cloud_kw={"max_payload": 8192})
    make_backlog(env.state_dir / "queue.db", n, names)
    d = env.daemon()
    got = collections.Counter()

    def drained():
        got.clear()
        for r in env.tb.records("telemetry", GW):
            data = r["data"]
            for o in data if isinstance(data, list) else [data]:
                for k, v in o["values"].items():
                    got[int(v) - BACKLOG_BASE] += 1
        return len(got) == n or None
    wait_until(drained, 60, what="the whole backlog")
    assert set(got.values()) == {1}, "a row twice"  # exactly once
    recs = env.tb.records("telemetry", GW)
    assert max(r["size"] for r in recs) <= 8192
    # packed: most publishes are arrays filling the limit that
    # getSessionLimits reported (not the 64 KiB default)
    arrays = [r for r in recs if isinstance(r["data"], list)]
    assert len(arrays) >= len(recs) - 2
    # (the first few are smaller: the uplink reads more rows per publish as
    # it finds them fitting)
    assert sum(r["size"] > 7000 for r in recs) >= len(recs) * 0.9
    assert len(recs) < n / 50
    d.stop()
    # every row left the store, after its PUBACK
    d.wait_for_log(r"%d acknowledged" % n)
    assert not env.tb.records("payload_too_large")


def test_shared_interval_is_fetched_at_start_and_applied_on_change(tb):
    env = tb()
    # set before the device connects: fetched by the attribute request
    env.tb.set_shared(GW, {"sensor.boiler.interval": "2s"})
    d = env.daemon()
    d.wait_for_log(r"shared attribute sensor\.boiler\.interval: sensor boiler now every 2000 ms")
    env.tb.wait_record("attr_request", GW)
    # pushed while connected: a number is seconds
    env.tb.set_shared(GW, {"sensor.boiler.interval": 0.2})
    d.wait_for_log(r"sensor boiler now every 200 ms")
    n0 = len(env.tb.telemetry(GW))
    time.sleep(2)
    assert len(env.tb.telemetry(GW)) - n0 >= 6  # ~10 at 200 ms, not 1 at 2 s
    # nonsense is ignored, the daemon goes on
    env.tb.set_shared(GW, {"sensor.boiler.interval": "soon"})
    env.tb.set_shared(GW, {"sensor.nosuch.interval": "1s"})
    env.tb.set_shared(GW, "{not json")
    d.wait_for_log(r"sensor\.boiler\.interval: not a duration")
    d.wait_for_log(r"malformed message on v1/devices/me/attributes")
    assert d.running
    d.stop()


def test_rpc_drives_the_gpio_output_and_reads_it_back(tb):
    env = tb(sensors={"sensor.relay": RELAY, "sensor.boiler": BOILER},
             cloud_keys={"gpio_pins": "7:relay"})
    d = env.daemon()
    env.tb.wait_record("subscribe", GW, lambda r: r["topic"].startswith("v1/devices/me/rpc/request"))
    env.tb.rpc(GW, 1, {"method": "setGpio", "params": {"pin": 7, "enabled": True}})
    assert env.tb.wait_rpc_response(GW, 1) == {"pin": 7, "enabled": True}
    env.tb.rpc(GW, 2, {"method": "getGpio", "params": {"pin": 7}})
    assert env.tb.wait_rpc_response(GW, 2) == {"pin": 7, "enabled": True}
    # the output's read-back is telemetry too
    env.tb.wait_telemetry(GW, lambda o: o["values"].get("relay.state") == 1)
    env.tb.rpc(GW, 3, {"method": "setGpio", "params": {"pin": 7, "enabled": False}})
    assert env.tb.wait_rpc_response(GW, 3) == {"pin": 7, "enabled": False}
    env.tb.rpc(GW, 4, {"method": "getGpio", "params": {}})
    assert env.tb.wait_rpc_response(GW, 4) == {"7": False}
    env.tb.rpc(GW, 5, {"method": "getTelemetry", "params": {}})
    tel = env.tb.wait_rpc_response(GW, 5)
    assert set(tel) == {"relay.state", "boiler.T"} and tel["relay.state"]["value"] == 0
    # errors are answered, not left to time out
    env.tb.rpc(GW, 6, {"method": "setGpio", "params": {"pin": 9, "enabled": True}})
    assert "no GPIO pin 9" in env.tb.wait_rpc_response(GW, 6)["error"]
    env.tb.rpc(GW, 7, {"method": "reboot", "params": {}})
    assert "unknown method" in env.tb.wait_rpc_response(GW, 7)["error"]
    d.stop()


@pytest.mark.parametrize("payload", [
    "{not json", "", "[1,2,3]", '{"method": 5}', '{"method": "setGpio", "params": "x"}',
    '{"method": "setGpio", "params": {"pin": "7", "enabled": 1}}', '"\\u0000"',
    '{"method": "getGpio", "params": {"pin": 1e400}}',
])
def test_malformed_rpc_is_answered_without_a_crash(tb, payload):
    env = tb(sensors={"sensor.relay": RELAY}, cloud_keys={"gpio_pins": "7:relay"})
    d = env.daemon()
    env.tb.wait_record("subscribe", GW, lambda r: r["topic"].startswith("v1/devices/me/rpc/request"))
    env.tb.rpc(GW, 11, payload)
    assert "error" in env.tb.wait_rpc_response(GW, 11)
    env.tb.rpc(GW, 12, {"method": "getGpio", "params": {"pin": 7}})
    assert env.tb.wait_rpc_response(GW, 12)["pin"] == 7
    assert d.running
    d.stop()


def test_chain_variant_creates_the_device_from_the_cn(tb):
    env = tb(cloud_kw={"tb_mode": "chain"})
    d = env.daemon()
    env.tb.wait_record("device_created", GW)
    env.tb.wait_telemetry(GW)
    assert env.tb.wait_record("connect", GW)["credentials"] == "chain"
    d.stop()


def test_an_unknown_certificate_is_refused(tb):
    env = tb()
    other = env.issue_device_chain("other-chain.pem", cn=GW)  # same CN, not registered
    env.write_config(cloud={"cert_file": other}, sensors={"sensor.boiler": BOILER})
    d = env.daemon()
    env.tb.wait_record("refused", pred=lambda r: r["cn"] == GW)
    time.sleep(1)
    assert not env.tb.records("connect", GW)
    assert d.running  # it queues and retries
    d.stop()
