"""Fixtures for the GPIO stage (tests/gpio): these tests run only inside the
GPIO test VM (tests/gpio/run-vm.sh, `make check-gpio`); on any other kernel
the whole directory is skipped with the reason."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import simgpio  # noqa: E402

# the integration fixtures (pki, edgebridged, make_env) and their reports
from integration.conftest import (edgebridged, make_env, pki,  # noqa: E402,F401
                                  pytest_runtest_makereport)

_seq = itertools.count()


def pytest_collection_modifyitems(config, items):
    if simgpio.in_vm():
        return
    skip = pytest.mark.skip(reason="GPIO tests run only in the VM: make check-gpio")
    for item in items:
        item.add_marker(skip)


@pytest.fixture
def sim_chip():
    """Factory: sim_chip(num_lines=8, line_names=None) -> a fresh SimChip
    with a unique label (t<N>-<test>); all removed at teardown."""
    made = []

    def factory(num_lines: int = 8, line_names=None, label=None):
        n = next(_seq)
        chip = simgpio.SimChip(f"t{n}", num_lines=num_lines,
                               label=label or f"eb-t{n}", line_names=line_names)
        made.append(chip)
        return chip

    yield factory
    for chip in reversed(made):
        chip.close()


# -- which drivers this edgebridged has (test_daemon.py, test_tb.py) ------------

@pytest.fixture(scope="session")
def known_drivers(edgebridged, tmp_path_factory):
    """The drivers this edgebridged has (from its own 'known:' list)."""
    conf = tmp_path_factory.mktemp("probe") / "probe.conf"
    conf.write_text("[gateway]\nid = probe\n[sensor.p]\ndriver = probe-nonexistent\n")
    p = subprocess.run([str(edgebridged), "-c", str(conf), "--check-config"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    m = re.search(r"known: ([^)]*)\)", p.stdout)
    assert m, f"cannot tell the drivers from --check-config:\n{p.stdout}"
    return {d.strip() for d in m[1].split(",")}


@pytest.fixture
def need(known_drivers):
    def check(*drivers):
        missing = [d for d in drivers if d not in known_drivers]
        if missing:
            msg = f"waits for driver {', '.join(missing)} (not in this edgebridged)"
            if os.environ.get("GPIO_REQUIRE_DRIVERS") == "1":
                pytest.fail(msg, pytrace=False)
            pytest.skip(msg)
    return check
