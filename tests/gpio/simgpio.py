"""gpio-sim from user space: chips created through configfs, inputs driven
through the simulator's sysfs pull attribute, outputs read from its value
attribute. Runs only inside the GPIO test VM (tests/gpio/run-vm.sh), where
guest-init loaded gpio-sim and mounted configfs.

    chip = SimChip("t-debounce", num_lines=8)     # label "t-debounce"
    chip.pull(3, 1)                                # line 3 sees a high level
    chip.value(5)                                  # what a consumer drives on 5
    chip.close()

guest-init also creates chip0 (label eb-sim0, 16 lines named l0..l15) for
the shell smoke test; SimChip.attach("chip0") wraps it.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

CONFIGFS = Path("/sys/kernel/config/gpio-sim")
PLATFORM = Path("/sys/devices/platform")


def in_vm() -> bool:
    return os.environ.get("EB_IN_GPIO_VM") == "1" and CONFIGFS.is_dir()


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class SimChip:
    """One gpio-sim device with one bank (= one gpiochip)."""

    def __init__(self, name: str, num_lines: int = 8, label: Optional[str] = None,
                 line_names: Optional[Sequence[str]] = None, create: bool = True):
        self.name = name
        self.label = label or name
        self.num_lines = num_lines
        self.dir = CONFIGFS / name
        self.bank = self.dir / "bank0"
        self._owned = create
        if create:
            self.bank.mkdir(parents=True)
            _write(self.bank / "num_lines", str(num_lines))
            _write(self.bank / "label", self.label)
            for i, n in enumerate(line_names or []):
                if n:
                    (self.bank / f"line{i}").mkdir()
                    _write(self.bank / f"line{i}" / "name", n)
            _write(self.dir / "live", "1")
        self.dev_name = (self.dir / "dev_name").read_text().strip()    # gpio-sim.N
        self.chip_name = (self.bank / "chip_name").read_text().strip() # gpiochipM
        self.sysfs = PLATFORM / self.dev_name / self.chip_name
        self.dev = Path("/dev") / self.chip_name

    @classmethod
    def attach(cls, name: str) -> "SimChip":
        chip = cls.__new__(cls)
        chip.name = name
        chip.dir = CONFIGFS / name
        chip.bank = chip.dir / "bank0"
        chip._owned = False
        chip.label = (chip.bank / "label").read_text().strip()
        chip.num_lines = int((chip.bank / "num_lines").read_text())
        chip.dev_name = (chip.dir / "dev_name").read_text().strip()
        chip.chip_name = (chip.bank / "chip_name").read_text().strip()
        chip.sysfs = PLATFORM / chip.dev_name / chip.chip_name
        chip.dev = Path("/dev") / chip.chip_name
        return chip

    # -- lines ---------------------------------------------------------------
    def line_dir(self, line: int) -> Path:
        return self.sysfs / f"sim_gpio{line}"

    def pull(self, line: int, level: int) -> None:
        """Drive an input: pull-up (1) or pull-down (0). Edges reach a
        consumer's line request at once (the simulator's irq_sim)."""
        _write(self.line_dir(line) / "pull", "pull-up" if level else "pull-down")

    def get_pull(self, line: int) -> str:
        return (self.line_dir(line) / "pull").read_text().strip()

    def value(self, line: int) -> int:
        """The line's level as the simulator sees it: for an output, what
        its consumer drives; for an input, the pull."""
        return int((self.line_dir(line) / "value").read_text())

    def toggle(self, line: int, n: int, period: float = 0.0,
               start_level: Optional[int] = None) -> None:
        """n level changes on `line` (low->high and high->low each count one),
        `period` seconds apart."""
        level = self.value(line) if start_level is None else start_level
        for _ in range(n):
            level ^= 1
            self.pull(line, level)
            if period:
                time.sleep(period)

    def pulses(self, line: int, n: int, high: float, low: float) -> None:
        """n full pulses (rising then falling), starting from low."""
        self.pull(line, 0)
        for _ in range(n):
            time.sleep(low)
            self.pull(line, 1)
            time.sleep(high)
            self.pull(line, 0)

    # -- teardown ------------------------------------------------------------
    def close(self) -> None:
        if not self._owned or not self.dir.exists():
            return
        _write(self.dir / "live", "0")
        for d in sorted(self.bank.glob("line*")):
            for sub in ("hog",):
                if (d / sub).exists():
                    (d / sub).rmdir()
            d.rmdir()
        self.bank.rmdir()
        self.dir.rmdir()

    def __enter__(self) -> "SimChip":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def chips() -> List[Dict[str, str]]:
    """Every live gpio-sim bank: name, label, chip_name, dev_name."""
    out = []
    for d in sorted(CONFIGFS.glob("*/bank*")):
        try:
            out.append({"name": d.parent.name, "label": (d / "label").read_text().strip(),
                        "chip_name": (d / "chip_name").read_text().strip(),
                        "dev_name": (d.parent / "dev_name").read_text().strip()})
        except OSError:
            pass
    return out


# -- the kernel's own record of what consumers drove --------------------------

def chip_base(label: str) -> int:
    """The global GPIO number of line 0 of the chip with this label (from
    /sys/class/gpio, CONFIG_GPIO_SYSFS): what gpio trace events name."""
    for d in Path("/sys/class/gpio").glob("gpiochip*"):
        try:
            if (d / "label").read_text().strip() == label:
                return int((d / "base").read_text())
        except OSError:
            continue
    raise LookupError(f"no gpiochip labelled {label!r} in /sys/class/gpio")


class GpioTrace:
    """ftrace events gpio:gpio_value and gpio:gpio_direction: every level a
    consumer set, in order, as the kernel saw it. gpio-sim puts an output
    back to its pull when it is released, so what a daemon drove just
    before it let go (a safe state at shutdown) is only visible here."""

    ROOT = Path("/sys/kernel/tracing")
    LINE = re.compile(r"gpio_(value|direction): (\d+) (get|set|in|out) \(?(-?\d+)\)?")

    def __init__(self):
        if not (self.ROOT / "trace").exists():
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(self.ROOT)], check=True)
        _write(self.ROOT / "tracing_on", "0")
        _write(self.ROOT / "buffer_size_kb", "8192")
        _write(self.ROOT / "trace", "")
        _write(self.ROOT / "events/gpio/enable", "1")
        _write(self.ROOT / "tracing_on", "1")

    def events(self, gpio: Optional[int] = None) -> List[tuple]:
        """(kind, gpio, op, value) in order: ("value", 515, "set", 1),
        ("direction", 515, "out", 0) (value = the call's result there)."""
        out = []
        for ln in (self.ROOT / "trace").read_text().splitlines():
            m = self.LINE.search(ln)
            if m and (gpio is None or int(m[2]) == gpio):
                out.append((m[1], int(m[2]), m[3], int(m[4])))
        return out

    def sets(self, gpio: int) -> List[int]:
        """Every level set on that GPIO (value writes and outputs' initial
        levels), in order."""
        return [v for kind, _, op, v in self.events(gpio) if kind == "value" and op == "set"]

    def close(self) -> None:
        _write(self.ROOT / "events/gpio/enable", "0")
        _write(self.ROOT / "trace", "")
