"""A sensor that stops answering raises one major alarm in the cloud (not
one per attempt) while the others go on; when it answers again the alarm is
cleared (SmartREST 306) and an event says so.  Host-side, with the hwmon
driver on a fake sysfs file that vanishes and comes back."""

from __future__ import annotations

import time

from harness import wait_until

GW = "gw-0001"


def test_failing_sensor_alarm_is_raised_once_and_cleared(make_env):
    env = make_env(cloud="c8y")
    env.start_broker()
    fake = env.dir / "hwmon" / "temp1_input"
    fake.parent.mkdir()
    fake.write_text("41500\n")
    env.write_config(sensor__probe={"driver": "hwmon", "path": fake, "interval": "200ms",
                                    "fragment": "c8y_Temperature", "series": "T"})
    d = env.daemon()
    d.wait_for_log(env.connected_re(), timeout=20)
    wait_until(lambda: any(",c8y_Temperature,T,41.5" in l for l in env.c8y.lines(GW, "200,")),
               timeout=15, what="a reading of the probe")

    fake.unlink()  # the device went away
    wait_until(lambda: env.c8y.lines(GW, "302,edgebridge_SensorFailed_probe,"), timeout=15,
               what="the alarm")
    time.sleep(1.5)  # several more failed reads: still one alarm
    assert len(env.c8y.lines(GW, "302,edgebridge_SensorFailed_probe,")) == 1
    # the other sensors kept going
    n = len(env.c8y.lines(GW, "200,"))
    wait_until(lambda: len(env.c8y.lines(GW, "200,")) > n + 2, timeout=15,
               what="the other sensors' measurements")

    fake.write_text("42000\n")  # back
    wait_until(lambda: "306,edgebridge_SensorFailed_probe" in env.c8y.lines(GW, "306,"),
               timeout=15, what="the alarm cleared")
    wait_until(lambda: env.c8y.lines(GW, "400,edgebridge_SensorRecovered,"), timeout=15,
               what="the recovery event")
    wait_until(lambda: any(",c8y_Temperature,T,42" in l for l in env.c8y.lines(GW, "200,")),
               timeout=15, what="readings again")
    assert d.stop() == 0
