"""CoAP over DTLS ([cloud] transport = coap) against a real libcoap server
(tests/cloud/tb_coap_server.c) that requires a client certificate chain.

The payloads are the configured profile's (Cumulocity SmartREST here: the
transport carries them opaquely; ThingsBoard's device topics map to
/api/v1/...); the server records what each POST carried, so the counter
ledger accounts for every sample as with MQTT.
"""

from __future__ import annotations

import re
import time

import pytest

from harness import Pki, wait_until
from harness.accounting import Ledger, account, counter_sensors, request_stats
from harness.tbcoap import TbCoap
from harness.udploss import UdpLossProxy


def coap_config(env, cloud, **cloud_kw):
    return env.write_config(
        cloud={"transport": "coap", "host": cloud.host, "port": cloud.port,
               "ca_file": cloud.server_ca_file, "bulk": "false", "keepalive": "10s",
               "backoff_min": "200ms", "backoff_max": "2s", **cloud_kw})


@pytest.fixture
def cloud(env, tmp_path, pki):
    c = TbCoap(tmp_path / "coap", pki, post=["s/us"], observe=["s/ds"])
    yield c
    c.kill()


def test_handshake_with_the_token_key(env, cloud):
    """DTLS with the EC key on the token: the server verified the chain
    (leaf + intermediate, the server trusts the root only) and CN."""
    cloud.start()
    coap_config(env, cloud)
    d = env.daemon()
    d.wait_for_log(r"coap: connected to 127\.0\.0\.1:%d \(DTLS\) as 'gw-0001'"
                   % cloud.port, timeout=20)
    posts = cloud.wait_posts("s/us", n=3)
    assert {p["cn"] for p in posts} == {"gw-0001"}
    assert all(p["code"] == "2.01" for p in posts)
    assert any(p["payload"].startswith("200,") for p in cloud.wait_posts("s/us", n=5))
    sessions = [r for r in cloud.records("session") if r["path"] == "dtls_connected"]
    assert sessions and sessions[0]["cn"] == "gw-0001"
    assert env.pin not in d.output


def test_default_port_is_5684(env, cloud):
    cfg = env.write_config(cloud={"transport": "coap", "port": None,
                                  "ca_file": cloud.server_ca_file})
    r = env.check_config(cfg)
    assert "transport" not in r.stdout + r.stderr
    bad = env.write_config(cloud={"transport": "carrier-pigeon"})
    r = env.check_config(bad)
    assert r.returncode != 0
    assert re.search(r"cloud\.transport: 'carrier-pigeon' is not supported",
                     r.stdout + r.stderr)


def test_server_not_trusting_the_device(env, cloud, tmp_path):
    """A server with another client CA refuses the handshake: a clear error,
    nothing acknowledged, and everything arrives once it trusts us."""
    other = Pki(tmp_path / "other", name="other")
    cloud.client_ca_file = other.root_file
    cloud.start()
    coap_config(env, cloud)
    d = env.daemon()
    m = d.wait_for_log(r"coap: DTLS session with 127\.0\.0\.1:\d+ failed: (.*)",
                       timeout=40)
    assert "does not trust the CA of the device certificate" in m.group(1) \
        or "unknown ca" in m.group(1).lower(), m.group(1)
    assert not cloud.posts()
    st = request_stats(d)
    queued = st.get("queued_total") or st.get("waiting")
    assert queued, st
    cloud.client_ca_file = env.pki.root_file
    cloud.restart()
    d.wait_for_log(r"coap: connected to", timeout=30)
    ledger_first = [p for p in cloud.wait_posts("s/us", n=3) if "200," in p["payload"]]
    assert ledger_first


def test_server_restart_and_loss_lose_nothing(env, cloud):
    """20% loss both ways through a proxy, and a server restart mid-stream
    (sessions gone without a close_notify): every sample arrives,
    duplicates are counted, the store ends empty."""
    names = ["a", "b"]
    count = 150
    cloud.start()
    with UdpLossProxy(cloud.host, cloud.port, loss=0.2, seed=42) as proxy:
        env.write_config(
            sensors=counter_sensors(names, interval="50ms", count=count),
            cloud={"transport": "coap", "host": proxy.host, "port": proxy.port,
                   "ca_file": cloud.server_ca_file, "bulk": "false",
                   "keepalive": "5s", "backoff_min": "200ms", "backoff_max": "2s",
                   "coap_ack_timeout": "300ms", "coap_max_retransmit": "6"})
        d = env.daemon()
        d.wait_for_log(r"coap: connected to", timeout=60)
        wait_until(lambda: len(cloud.lines()) > 40, 60, what="samples before restart")
        cloud.restart(down_for=1.0)
        ledger = Ledger(names)

        def done():
            ledger.__init__(names)
            ledger.update(cloud.lines())
            return all(ledger.has_all(n, 0, count) for n in names)
        wait_until(done, 120, interval=0.5, what="every sample")
        report = account(ledger, {0: count})
        assert report.ok, report
        st = request_stats(d)
        assert proxy.dropped["up"] > 0 and proxy.dropped["down"] > 0
        print(f"loss: dropped {proxy.dropped}, forwarded {proxy.forwarded}, "
              f"duplicates {ledger.total_duplicates()}, stats {st}")
    wait_until(lambda: request_stats(d).get("waiting", 1) == 0
               if "waiting" in st else True, 30, interval=1,
               what="an empty store")
    assert len(re.findall(r"coap: connected to", d.output)) >= 2


def test_observe_delivers_to_the_companions(env, cloud):
    """A notification on an observed resource reaches the companion that
    subscribed to the MQTT-equivalent topic (here the Cumulocity operation
    handler on s/ds), whose answers go back as POSTs."""
    cloud.start()
    coap_config(env, cloud)
    d = env.daemon()
    d.wait_for_log(r"coap: connected to", timeout=20)
    cloud.wait_observers("s/ds")
    cloud.notify("s/ds", "511,gw-0001,uptime")
    posts = wait_until(lambda: [p for p in cloud.posts("s/us")
                                if p["payload"].startswith("502,c8y_Command")],
                       20, what="the 502 answer")
    assert posts  # unsupported here: 502 with the reason, via cloud_publish()


def test_error_answer_is_not_an_acknowledgement(env, cloud):
    """5.03 to a POST: the rows stay in the store, the session is renewed
    and they are sent again."""
    cloud.start()
    coap_config(env, cloud)
    d = env.daemon()
    d.wait_for_log(r"coap: connected to", timeout=20)
    cloud.wait_posts("s/us", n=3)
    cloud.fail_next(1, "5.03")
    d.wait_for_log(r"coap: disconnected from .*the server answered 5\.03", timeout=20)
    d.wait_for_log(r"coap: connected to", timeout=20, count=2)
    refused = [p for p in cloud.posts("s/us") if p["code"] == "5.03"][0]
    again = wait_until(lambda: [p for p in cloud.posts("s/us")
                                if p["payload"] == refused["payload"]
                                and p["code"] == "2.01"], 20,
                       what="the refused payload again")
    assert again
