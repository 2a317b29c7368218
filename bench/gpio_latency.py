#!/usr/bin/python3
"""GPIO input figures on a real kernel (gpio-sim in the GPIO test VM).

    /usr/bin/python3 bench/gpio_latency.py [--edges N] [--rates 100,200,...] [--json FILE]

On the host this prepares the VM (tests/gpio/prepare.sh), builds
build/vm/edgebridged (no sanitizers) and re-runs itself inside ONE boot of
tests/gpio/run-vm.sh (--guest). Under TCG (no KVM): figures are for
comparison between runs on the same machine, not for a real gateway.

In the guest: a SoftHSM2 token, PKI and mosquitto with require_certificate
(the integration harness, plain Broker), edgebridged with gpio-input
sensors (debounce 0, report = event), and a paho observer on s/us.
  latency     N single edges, 50 ms apart, on one line: from just before
              the write to the simulator's pull attribute to the 400 line
              arriving at the observer (so it includes the kernel, the
              daemon, the durable queue, TLS, mosquitto and paho): p50/p90/
              p99/max; also the event's own time (the kernel edge timestamp,
              ms) minus the write time.
  throughput  for each rate, 3 s of edges paced at that rate on a fresh line
              (its own sensor); events that arrived / edges made. The highest
              rate MADE with nothing lost is "sustained without loss" (Python
              writing sysfs under TCG makes only a few hundred edges/s). The kernel's
              irq:irq_handler_entry trace events count the interrupts the line
              really raised: gpio-sim (irq_sim, irq_work) merges level changes
              that come faster than its irq work runs, and uAPI v1 then reads
              one level for both, so "edges - irqs" is lost by the simulator;
              "irqs - events" is lost after the interrupt: uAPI v1's threaded
              handler reading one level for two irqs, its 16-event FIFO, or
              the daemon (this bench cannot tell those apart).
A benchmark fails (exit 1) only when something broke, never for being slow.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def host(args) -> int:
    r = subprocess.run([str(REPO / "tests/gpio/prepare.sh")])
    if r.returncode == 77:
        print("GPIO BENCH SKIPPED: the VM cannot be prepared here (see above)", file=sys.stderr)
        return 77
    if r.returncode:
        return 1
    if subprocess.run(["make", "-s", "B=build/vm", "BA=build/vm-asan",
                       "build/vm/edgebridged"], cwd=REPO).returncode:
        return 1
    rundir = REPO / "build/gpio-vm/runs" / time.strftime("bench-%Y%m%d-%H%M%S")
    rundir.mkdir(parents=True)
    cmd = [str(REPO / "tests/gpio/run-vm.sh"), "-t", "900", "-d", str(rundir), "--",
           "env", f"EDGEBRIDGED={REPO}/build/vm/edgebridged",
           "/usr/bin/python3", "bench/gpio_latency.py", "--guest",
           "--edges", str(args.edges), "--rates", args.rates]
    rc = subprocess.run(cmd).returncode
    res = rundir / "gpio_latency.json"
    if res.exists():
        data = json.loads(res.read_text())
        out = Path(args.json) if args.json else REPO / "build/bench/gpio_latency.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2))
        print(summary(data))
        print(f"(written to {out})")
    return rc


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summary(d) -> str:
    lat = d["latency_ms"]
    lines = [f"GPIO bench on {d['kernel']} under {d['accel']} ({d['cpus']} vCPUs):",
             f"  edge -> 400 line at the subscriber: p50 {lat['p50']:.1f} ms, "
             f"p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms "
             f"({lat['n']} edges, {lat['missing']} missing)",
             f"  write -> kernel edge timestamp: p50 {d['edge_stamp_ms']['p50']:.1f} ms"]
    for t in d["throughput"]:
        lines.append(f"  {t['rate']:>6}/s asked, {t['achieved']:5.0f}/s made: "
                     f"{t['edges']} edges, {t['irqs']} irqs, {t['received']} events "
                     f"(simulator merged {t['edges'] - t['irqs']}, "
                     f"lost after the irq {t['irqs'] - t['received']})")
    lines.append(f"  sustained without loss (rate made, not asked): "
                 f"{d['sustained_without_loss']} edges/s (every edge an event); every "
                 f"kernel irq an event up to {d['daemon_kept_up_to']} edges/s")
    return "\n".join(lines)


# -- in the guest ----------------------------------------------------------------

def guest(args) -> int:
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO / "tests/gpio"))
    import simgpio
    from harness import Env, expect, wait_until

    rates = [int(r) for r in args.rates.split(",")]
    tmp = Path("/tmp/gpio-bench")
    env = Env(tmp)
    chip = simgpio.SimChip("bench", num_lines=1 + len(rates), label="eb-bench")
    sensors = {"sensor.lat": {"driver": "gpio-input", "chip": chip.label, "line": 0,
                              "bias": "as-is", "debounce": "0", "report": "event"}}
    for i in range(len(rates)):
        sensors[f"sensor.r{i}"] = {**sensors["sensor.lat"], "line": i + 1}
    for i in range(chip.num_lines):
        chip.pull(i, 0)
    ok = True
    try:
        env.start_broker()
        obs = env.observer()
        env.write_config(sensors=sensors, cloud={"bulk": "no"}, gateway={"log_level": "notice"})
        d = env.daemon()
        d.wait_for_log(env.connected_re(), timeout=60)
        rx = re.compile(r"sensor (\w+): line (\d+) is (\d)(.*)")

        def events(name):
            out = []
            for ln in list(obs.lines):
                e = expect.parse_event(ln.text)
                if e and e.type == "edgebridge_GpioChange":
                    m = rx.match(e.text)
                    if m and m[1] == name and "current state" not in m[4]:
                        out.append((ln.time, e.time.timestamp(), int(m[3])))
            return out

        wait_until(lambda: any("sensor lat:" in ln.text for ln in obs.lines), 30,
                   what="the current state")
        # latency
        sent = []
        level = 0
        for _ in range(args.edges):
            level ^= 1
            t = time.time()
            chip.pull(0, level)
            sent.append(t)
            time.sleep(0.05)
        try:
            wait_until(lambda: len(events("lat")) >= len(sent), 30, what="latency events")
        except TimeoutError:
            pass
        got = events("lat")
        lat = [(r - s) * 1000 for s, (r, _, _) in zip(sent, got)]
        stamp = [(k - s) * 1000 for s, (_, k, _) in zip(sent, got)]
        res = {"kernel": os.uname().release, "accel": "TCG", "cpus": os.cpu_count(),
               "latency_ms": {"n": len(sent), "missing": len(sent) - len(got),
                              "p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99),
                              "max": max(lat), "mean": statistics.mean(lat)},
               "edge_stamp_ms": {"p50": pct(stamp, 50), "p99": pct(stamp, 99)},
               "throughput": []}
        ok &= len(got) == len(sent) and [lv for _, _, lv in got] == [
            (i + 1) % 2 for i in range(len(sent))]
        # throughput, with the kernel's count of the line interrupts
        tr = Path("/sys/kernel/tracing")
        if not (tr / "trace").exists():
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(tr)], check=True)
        irq_of = {}
        for ln in Path("/proc/interrupts").read_text().splitlines():
            f = ln.split()
            if f and f[0].rstrip(":").isdigit() and re.fullmatch(r"r\d+", f[-1]):
                irq_of[f[-1]] = int(f[0].rstrip(":"))
        (tr / "buffer_size_kb").write_text("16384")
        ev = tr / "events/irq/irq_handler_entry"
        (ev / "filter").write_text(" || ".join(f"irq == {n}" for n in irq_of.values()) or "0")
        (ev / "enable").write_text("1")
        sustained = kept_up = 0
        for i, rate in enumerate(rates):
            line, name, n = i + 1, f"r{i}", int(rate * 3)
            (tr / "trace").write_text("")
            level, t0 = 0, time.monotonic()
            for k in range(n):
                due = t0 + k / rate
                while (now := time.monotonic()) < due:
                    if due - now > 0.002:
                        time.sleep(due - now - 0.001)
                level ^= 1
                chip.pull(line, level)
            made = time.monotonic() - t0
            last, still = -1, time.monotonic()
            while time.monotonic() - still < 5:       # until nothing new for 5 s
                c = len(events(name))
                if c != last:
                    last, still = c, time.monotonic()
                if c >= n:
                    break
                time.sleep(0.2)
            c = len(events(name))
            irqs = len(re.findall(rf"irq_handler_entry: irq={irq_of.get(name, -1)} ",
                                  (tr / "trace").read_text()))
            res["throughput"].append({"rate": rate, "edges": n, "achieved": n / made,
                                      "irqs": irqs, "received": c, "lost": n - c})
            if c == n:
                sustained = max(sustained, round(n / made))
            if c == irqs and irqs:
                kept_up = max(kept_up, round(n / made))
        (ev / "enable").write_text("0")
        res["sustained_without_loss"] = sustained
        res["daemon_kept_up_to"] = kept_up
        assert d.stop() == 0, "daemon did not stop cleanly"
        out = Path(args.json or Path(os.environ["EB_RUN_DIR"]) / "gpio_latency.json")
        out.write_text(json.dumps(res, indent=2))
        print(summary(res))
    finally:
        env.close()
        chip.close()
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--edges", type=int, default=200)
    ap.add_argument("--rates", default="100,300,700,2000")
    ap.add_argument("--json")
    args = ap.parse_args()
    return guest(args) if args.guest else host(args)


if __name__ == "__main__":
    sys.exit(main())
