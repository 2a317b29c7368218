"""ThingsBoard over CoAP ([cloud] profile = thingsboard, transport = coap),
end to end against tests/cloud/tb_coap_server.c, a ThingsBoard CoAP device
endpoint on libcoap (DTLS, X.509 client certificate chain required).

Telemetry {"ts", "values"} POSTed to /api/v1/telemetry (confirmable: a row
leaves the store only on its 2.01), client attributes POSTed on connect,
the shared attributes fetched at start with GET /api/v1/attributes?
sharedKeys=... and pushed by observing /api/v1/attributes, server-side RPC
by observing /api/v1/rpc with the answer POSTed to /api/v1/rpc/{id}; what
the server refuses for good (4.13, 4.00) neither blocks the queue nor ends
the session."""

from __future__ import annotations

import collections
import json
import time

import pytest

from harness import wait_until
from harness.accounting import request_stats
from harness.backlog import BACKLOG_BASE, make_backlog, sensor_names
from harness.tbcoap import TbCoap

GW = "gw-0001"

RELAY = {"driver": "sim", "waveform": "output", "interval": "1s",
         "fragment": "c8y_Relay", "series": "state", "unit": ""}
BOILER = {"driver": "sim", "interval": "500ms", "fragment": "c8y_Temperature",
          "series": "T", "unit": "C", "waveform": "sine", "min": 20, "max": 80,
          "period": "60s", "seed": 1}


@pytest.fixture
def tb(env, tmp_path, pki):
    """factory(sensors=..., cloud_keys=..., **TbCoap kwargs) -> the started
    server, with the daemon's configuration written for it."""
    servers = []

    def factory(sensors=None, cloud_keys=None, **kw):
        c = TbCoap(tmp_path / f"coap{len(servers)}", pki, **kw)
        servers.append(c)
        c.start()
        env.write_config(
            sensors={"sensor.boiler": BOILER} if sensors is None else sensors,
            cloud={"profile": "thingsboard", "transport": "coap",
                   "host": c.host, "port": c.port, "ca_file": c.server_ca_file,
                   "keepalive": "10s", "backoff_min": "200ms", "backoff_max": "2s",
                   **dict(cloud_keys or {})})
        return c
    yield factory
    for c in servers:
        c.kill()


def objects(posts):
    out = []
    for p in posts:
        data = json.loads(p["payload"])
        out.extend(data if isinstance(data, list) else [data])
    return out


def test_telemetry_has_the_samples_ts_and_values(env, tb):
    cloud = tb()
    t0 = int(time.time() * 1000)
    d = env.daemon()
    d.wait_for_log(r"coap: connected to .* as 'gw-0001'", timeout=30)
    wait_until(lambda: len(cloud.telemetry()) >= 3, 30, what="3 telemetry objects")
    objs = cloud.telemetry()
    for o in objs:
        assert set(o) == {"ts", "values"}, o
        assert t0 - 1000 <= o["ts"] <= int(time.time() * 1000)
        assert set(o["values"]) == {"boiler.T"}
        assert 20 <= o["values"]["boiler.T"] <= 80
    assert [o["ts"] for o in objs] == sorted(o["ts"] for o in objs)
    posts = cloud.posts("api/v1/telemetry")
    assert {p["cn"] for p in posts} == {GW}
    # client attributes on connect
    attrs = json.loads(cloud.wait_posts("api/v1/attributes")[0]["payload"])
    assert attrs["current_fw_title"] == "edgebridge"
    assert attrs["sensors"][0]["key"] == "boiler.T"
    # the shared attributes asked for at start, as a GET with the keys
    req = wait_until(lambda: cloud.records("attr_request"), 30, what="the attribute request")
    assert req[0]["payload"] == "sharedKeys=sensor.boiler.interval"
    cloud.wait_observers("api/v1/attributes")
    cloud.wait_observers("api/v1/rpc")
    # the server refused nothing, and the session never ended
    assert not [p for p in cloud.posts() if p["code"] not in ("2.01", "2.05")]
    assert len([r for r in cloud.records("session") if r["path"] == "dtls_connected"]) == 1
    d.stop()


def test_backlog_goes_as_arrays_every_row_once(env, tb):
    n, names = 3000, sensor_names(4)
    cloud = tb(sensors={})
    make_backlog(env.state_dir / "queue.db", n, names)
    d = env.daemon()
    got = collections.Counter()

    def drained():
        got.clear()
        for o in cloud.telemetry():
            for v in o["values"].values():
                got[int(v) - BACKLOG_BASE] += 1
        return len(got) == n or None
    wait_until(drained, 180, interval=1, what="the whole backlog")
    posts = cloud.posts("api/v1/telemetry")
    assert set(got) == set(range(n))
    # no loss here, no session renewed: every row exactly once
    assert set(got.values()) == {1}, "a row twice"
    assert [p for p in posts if p["payload"].startswith("[")], "no arrays"
    # packed, but each within one CoAP block (1024 bytes: libcoap 4.3.1
    # can stall a block-wise POST), so about 20 rows a request here
    assert max(len(p["payload"]) for p in posts) <= 1024
    assert len(posts) < n / 10
    d.stop()
    d.wait_for_log(r"%d acknowledged" % n)


def test_shared_interval_is_fetched_at_start_and_applied_on_change(env, tb):
    cloud = tb()
    # set before the device connects: fetched by the attribute request
    cloud.command('shared {"sensor.boiler.interval":"2s","other":1}')
    d = env.daemon()
    d.wait_for_log(r"shared attribute sensor\.boiler\.interval: sensor boiler now every 2000 ms",
                   timeout=30)
    cloud.wait_observers("api/v1/attributes")
    # pushed while connected: a number is seconds
    cloud.shared({"sensor.boiler.interval": 0.2})
    d.wait_for_log(r"sensor boiler now every 200 ms", timeout=30)
    # nonsense is ignored, the daemon goes on
    cloud.shared({"sensor.boiler.interval": "soon"})
    d.wait_for_log(r"sensor\.boiler\.interval: not a duration", timeout=30)
    cloud.shared("{not json")
    d.wait_for_log(r"malformed message on v1/devices/me/attributes", timeout=30)
    cloud.shared({"sensor.nosuch.interval": "1s"})
    d.wait_for_log(r"sensor\.nosuch\.interval not applied", timeout=30)
    assert d.running
    st = request_stats(d)
    assert st["connected"]
    d.stop()


def test_rpc_drives_the_gpio_output_and_reads_it_back(env, tb):
    cloud = tb(sensors={"sensor.relay": RELAY, "sensor.boiler": BOILER},
               cloud_keys={"gpio_pins": "7:relay"})
    d = env.daemon()
    cloud.wait_observers("api/v1/rpc", timeout=30)
    cloud.rpc(1, {"method": "setGpio", "params": {"pin": 7, "enabled": True}})
    assert cloud.wait_rpc_response(1) == {"pin": 7, "enabled": True}
    cloud.rpc(2, {"method": "getGpio", "params": {"pin": 7}})
    assert cloud.wait_rpc_response(2) == {"pin": 7, "enabled": True}
    # the output's read-back is telemetry too
    wait_until(lambda: [o for o in cloud.telemetry()
                        if o["values"].get("relay.state") == 1], 30,
               what="relay.state 1 in the telemetry")
    cloud.rpc(3, {"method": "setGpio", "params": {"pin": 7, "enabled": False}})
    assert cloud.wait_rpc_response(3) == {"pin": 7, "enabled": False}
    cloud.rpc(4, {"method": "getGpio", "params": {}})
    assert cloud.wait_rpc_response(4) == {"7": False}
    cloud.rpc(5, {"method": "setGpio", "params": {"pin": 9, "enabled": True}})
    assert "no GPIO pin 9" in cloud.wait_rpc_response(5)["error"]
    assert all(p["code"] == "2.01" for p in cloud.posts()
               if p["path"].startswith("api/v1/rpc/"))
    d.stop()


@pytest.mark.parametrize("payload", [
    '{"id":11,"method":5}', '{"id":11,"method":"setGpio","params":"x"}',
    '{"id":11,"method":"setGpio","params":{"pin":"7","enabled":1}}',
    '{"id":11,"method":"getGpio","params":{"pin":1.5}}',
    '{"id":11}', '{"id":11,"method":"reboot"}',
])
def test_malformed_rpc_is_answered_without_a_crash(env, tb, payload):
    cloud = tb(sensors={"sensor.relay": RELAY}, cloud_keys={"gpio_pins": "7:relay"})
    d = env.daemon()
    cloud.wait_observers("api/v1/rpc", timeout=30)
    # without a usable id it cannot be answered: ignored
    for junk in ("{not json", "[1,2]", '{"id":"x"}', '{"id":-1}', ""):
        cloud.rpc(0, junk)
    cloud.rpc(11, payload)
    assert "error" in cloud.wait_rpc_response(11)
    cloud.rpc(12, {"method": "getGpio", "params": {"pin": 7}})
    assert cloud.wait_rpc_response(12)["pin"] == 7
    assert d.running
    assert len([r for r in cloud.records("session") if r["path"] == "dtls_connected"]) == 1
    d.stop()


def test_a_refused_payload_is_quarantined_not_retried(env, tb):
    """4.00 to a one-row POST: that row is quarantined (counted), the
    session goes on and the rows after it are delivered."""
    cloud = tb()
    d = env.daemon()
    wait_until(lambda: len(cloud.telemetry()) >= 2, 30, what="telemetry")
    cloud.fail_next(1, "4.00")
    d.wait_for_log(r"cloud: 1 samples refused for good \(the server answered 4\.00 "
                   r"to /api/v1/telemetry\): quarantined", timeout=30)
    n = len(cloud.telemetry())
    wait_until(lambda: len(cloud.telemetry()) >= n + 2, 30, what="telemetry after it")
    refused = [p for p in cloud.posts("api/v1/telemetry") if p["code"] == "4.00"]
    assert len(refused) == 1
    assert refused[0]["payload"] not in [p["payload"] for p in cloud.posts("api/v1/telemetry")
                                         if p["code"] == "2.01"]
    assert request_stats(d)["quarantined"] == 1
    assert len([r for r in cloud.records("session") if r["path"] == "dtls_connected"]) == 1
    d.stop()
