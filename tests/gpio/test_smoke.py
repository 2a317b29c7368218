"""Smoke: the simulated chip works with the stock libgpiod tools, before any
edgebridge code is involved. If these fail, the VM set-up is broken, not
the daemon."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

import simgpio


def run(*cmd, timeout=20, check=True):
    p = subprocess.run(list(map(str, cmd)), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}: {p.stdout}{p.stderr}")
    return p


def test_default_chip_is_listed():
    chip = simgpio.SimChip.attach("chip0")
    assert chip.label == "eb-sim0" and chip.num_lines == 16
    out = run("gpiodetect").stdout
    assert re.search(rf"^{chip.chip_name} \[eb-sim0\] \(16 lines\)$", out, re.M), out
    info = run("gpioinfo", "eb-sim0").stdout
    assert '"l3"' in info and "unused" in info, info


def test_pull_is_read_by_gpioget(sim_chip):
    chip = sim_chip(num_lines=8)
    for level in (1, 0, 1):
        chip.pull(3, level)
        assert run("gpioget", chip.label, 3).stdout.strip() == str(level)
        assert run("gpioget", chip.chip_name, 3).stdout.strip() == str(level)
    # the other lines did not move
    assert run("gpioget", chip.label, 4).stdout.strip() == "0"


def test_gpiomon_sees_every_edge_in_order(sim_chip):
    chip = sim_chip(num_lines=8)
    chip.pull(2, 0)
    mon = subprocess.Popen(["gpiomon", "-b", "-n", "6", "-F", "%e %s.%n",
                            chip.label, "2"], stdout=subprocess.PIPE, text=True)
    try:
        # wait until gpiomon holds the line (it is then "used" in gpioinfo)
        deadline = time.monotonic() + 10
        while "gpiomon" not in run("gpioinfo", chip.label).stdout:
            assert time.monotonic() < deadline, "gpiomon never requested the line"
            time.sleep(0.05)
        chip.toggle(2, 6, period=0.02, start_level=0)
        out, _ = mon.communicate(timeout=20)
    finally:
        mon.kill()
    events = [ln.split() for ln in out.splitlines()]
    assert [e[0] for e in events] == ["1", "0", "1", "0", "1", "0"], out
    stamps = [int(s.split(".")[0]) * 10**9 + int(s.split(".")[1]) for _, s in events]
    assert all(b > a for a, b in zip(stamps, stamps[1:])), out


def test_output_is_seen_in_sim_value(sim_chip):
    chip = sim_chip(num_lines=8)
    for v in (1, 0):
        p = subprocess.Popen(["gpioset", "-m", "signal", chip.label, f"5={v}"])
        try:
            deadline = time.monotonic() + 10
            while chip.value(5) != v:
                assert time.monotonic() < deadline, f"sim value never became {v}"
                time.sleep(0.05)
        finally:
            p.terminate()
            p.wait(10)


def test_a_held_line_is_busy(sim_chip):
    chip = sim_chip(num_lines=8)
    p = subprocess.Popen(["gpioset", "-m", "signal", chip.label, "1=1"])
    try:
        deadline = time.monotonic() + 10
        while "gpioset" not in run("gpioinfo", chip.label).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = run("gpioget", chip.label, 1, check=False)
        assert r.returncode != 0 and "busy" in r.stderr.lower(), r
    finally:
        p.terminate()
        p.wait(10)
