"""Fixtures for the GPIO stage (tests/gpio): these tests run only inside the
GPIO test VM (tests/gpio/run-vm.sh, `make check-gpio`); on any other kernel
the whole directory is skipped with the reason."""

from __future__ import annotations

import itertools
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
