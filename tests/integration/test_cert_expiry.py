"""A device certificate about to expire: the daemon keeps working, warns in
its log and raises a major alarm in the cloud (SmartREST 302), which is
queued in the store like any event and sent once connected."""

from __future__ import annotations

import datetime as dt


def test_expiring_certificate_raises_a_major_alarm(env):
    now = dt.datetime.now(dt.timezone.utc)
    chain = env.issue_device_chain("soon-chain.pem", not_before=now - dt.timedelta(days=1),
                                   not_after=now + dt.timedelta(days=10))
    env.write_config(cloud={"cert_file": chain})
    env.start_broker()
    obs = env.observer()
    d = env.daemon()
    d.wait_for_log(env.connected_re(), timeout=20)
    d.wait_for_log(r"warning: cert: the device certificate of gw-0001 expires on "
                   r"\d{4}-\d\d-\d\d \(in (9|10) days\)", timeout=10)
    alarm = obs.wait_lines(lambda l: l.text.startswith("302,edgebridge_CertificateExpiring,"),
                           n=1, timeout=20)
    texts = [l.text for l in obs.snapshot() if l.text.startswith("302,")]
    assert len(texts) == 1, texts
    assert "renew it" in texts[0] and texts[0].endswith("Z"), texts[0]
    # measurements still flow
    obs.wait_lines(lambda l: l.text.startswith("200,"), n=2, timeout=20)
    assert d.stop() == 0


def test_no_alarm_for_a_certificate_with_time_left(env):
    env.write_config()
    env.start_broker()
    obs = env.observer()
    d = env.daemon()
    d.wait_for_log(env.connected_re(), timeout=20)
    obs.wait_lines(lambda l: l.text.startswith("200,"), n=3, timeout=20)
    assert not [l for l in obs.snapshot() if l.text.startswith("30")]
    assert "expires on" not in d.output
    d.stop()
