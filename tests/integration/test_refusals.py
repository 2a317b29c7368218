"""The broker's side of refusals: a broker that does not trust the device's
CA ends the handshake with a TLS alert. The daemon names the alert, logs it
once however often it retries, and connects as soon as the broker is fixed."""

from __future__ import annotations

import time

from harness import Pki, wait_until


def test_broker_that_does_not_trust_the_device_ca(make_env, edgebridged, tmp_path):
    other = Pki(tmp_path / "other-ca", name="stranger")
    env = make_env()
    env.write_config(cloud={"backoff_min": "200ms", "backoff_max": "400ms"})
    env.broker.client_ca_file = other.root_file      # trusts someone else's devices
    env.broker._write_conf()
    env.start_broker()
    mark = env.broker.log_mark()
    d = env.daemon()
    alert = (r"error: mqtt: connection to 127\.0\.0\.1:\d+ failed: .*alert unknown ca.*"
             r"does not trust the CA of the device certificate")
    d.wait_for_log(alert, timeout=20)
    wait_until(lambda: env.broker.connection_attempts(mark) >= 4, 20,
               what="repeated connection attempts")
    time.sleep(0.5)
    assert d.count(alert) == 1, d.output          # once per state change
    assert env.gateway_id not in env.broker.client_ids()
    assert d.running

    # fixed on the broker side: the next retry gets in, without a restart
    env.broker.stop()
    env.broker.client_ca_file = env.pki.root_file
    env.broker._write_conf()
    env.broker.start()
    d.wait_for_log(env.connected_re(), timeout=20)
    d.stop()
