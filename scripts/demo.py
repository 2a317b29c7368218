#!/usr/bin/python3
"""edgebridge demo: a gateway publishing simulated (and, if present, real
hwmon) sensor readings to a local mutual-TLS MQTT broker, with the device key
generated on and never leaving a SoftHSM2 token.

    make demo                       # until Ctrl-C
    DEMO_SECONDS=10 make demo       # smoke test: exit 0 only if measurements arrived
    DEMO_DIR=/tmp/x make demo       # state dir (default <repo>/demo-state)
    EDGEBRIDGED=/path/to/binary     # default <repo>/build/edgebridged
    DEMO_HWMON_PATH=/some/file      # hwmon sensor source (default: first readable
                                    # thermal_zone0/temp or hwmon*/temp1_input)

The first run creates, under the state dir, a SoftHSM2 token with an EC P-256
key generated on it, a root -> intermediate PKI, and a device certificate for
a CSR signed by the token key (chain: leaf + intermediate + root). Later runs
reuse them. Every run starts a fresh mosquitto on a free loopback port and
edgebridged, prints what the broker receives on s/us and the daemon's log,
and stops everything it started on exit.

Run with /usr/bin/python3 (it needs Debian's python3-paho-mqtt and
python3-cryptography).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import (Broker, Daemon, Observer, Pki, Token, daemon_binary,  # noqa: E402
                     expect, make_csr_on_token, write_config)

GATEWAY_ID = "gw-demo-0001"
GATEWAY_NAME = "edgebridge demo gateway"
TOKEN_LABEL = "edgebridge"
KEY_LABEL = "device"
READY_MARK = ".demo-ready"

_print_lock = threading.Lock()
_stdout_ok = True


def say(prefix: str, text: str) -> None:
    global _stdout_ok
    with _print_lock:
        if not _stdout_ok:
            return
        try:
            print(f"{prefix}{text}", flush=True)
        except OSError:  # e.g. `make demo | head`: keep running, stop printing
            _stdout_ok = False


# -- persistent identity ----------------------------------------------------------

class Identity:
    def __init__(self, state: Path):
        self.state = state
        self.token_dir = state / "token"
        self.pki_dir = state / "pki"
        self.pin_file = state / "pin"
        self.cert_file = state / "device-chain.pem"
        self.mark = state / READY_MARK

    def ensure(self) -> "Identity":
        if self.mark.exists():
            pin = self.pin_file.read_text().rstrip("\n")
            self.token = Token(self.token_dir).attach(TOKEN_LABEL, pin, KEY_LABEL)
            self.pki = Pki.load(self.pki_dir)
            say("demo: ", f"reusing token, key and certificates in {self.state}")
            return self
        # (re)create from scratch; only our own entries are removed
        for p in (self.token_dir, self.pki_dir):
            shutil.rmtree(p, ignore_errors=True)
        for p in (self.pin_file, self.cert_file):
            if p.exists():
                p.unlink()
        self.state.mkdir(parents=True, exist_ok=True)
        say("demo: ", f"creating token, on-token EC P-256 key and PKI in {self.state}")
        pin = secrets.token_hex(8)
        so_pin = secrets.token_hex(8)
        self.token = Token(self.token_dir).init(TOKEN_LABEL, so_pin=so_pin, pin=pin)
        self.token.gen_ec_key(KEY_LABEL, "prime256v1")
        self.token.write_pin_file(self.pin_file)
        self.pki = Pki(self.pki_dir, name="edgebridge demo")
        csr = make_csr_on_token(self.token, GATEWAY_ID, out=self.state / "device.csr")
        device = self.pki.sign_csr(csr)
        device.write_chain(self.cert_file, "full")  # leaf + intermediate + root
        self.mark.write_text("ok\n")
        return self


# -- sensors ------------------------------------------------------------------------

def _readable_int(path: str) -> bool:
    try:
        with open(path) as f:
            int(f.read().strip())
        return True
    except (OSError, ValueError):
        return False


def hwmon_path():
    if os.environ.get("DEMO_HWMON_PATH"):  # e.g. a file holding "45000" to try it
        return os.environ["DEMO_HWMON_PATH"]
    candidates = ["/sys/class/thermal/thermal_zone0/temp",
                  *sorted(glob.glob("/sys/class/hwmon/hwmon*/temp1_input"))]
    return next((p for p in candidates if _readable_int(p)), None)


def sensors() -> dict:
    s = {
        "sensor.boiler": {"driver": "sim", "interval": "1s", "fragment": "c8y_Temperature",
                          "series": "T", "unit": "C", "waveform": "sine", "min": 40,
                          "max": 70, "period": "60s"},
        "sensor.pressure": {"driver": "sim", "interval": "1s", "fragment": "c8y_Pressure",
                            "series": "P", "unit": "bar", "waveform": "random-walk",
                            "min": 1, "max": 3},
    }
    hw = hwmon_path()
    if hw:
        s["sensor.cpu"] = {"driver": "hwmon", "path": hw, "interval": "1s",
                           "fragment": "c8y_CPUTemperature", "series": "T", "unit": "C"}
    return s


# -- run -------------------------------------------------------------------------------

def main() -> int:
    seconds = os.environ.get("DEMO_SECONDS")
    seconds = float(seconds) if seconds else None
    state = Path(os.environ.get("DEMO_DIR") or REPO / "demo-state").resolve()
    binary = daemon_binary()
    if not binary.is_file():
        say("demo: ", f"error: {binary} not found; run `make` first")
        return 2

    ident = Identity(state).ensure()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    broker = observer = daemon = None
    measurements = 0

    def on_line(line) -> None:
        nonlocal measurements
        if line.text.startswith("200,"):
            measurements += 1
        say("broker <- ", line.text)

    rc = 0
    printed = 0
    try:
        broker_dir = state / "broker"
        shutil.rmtree(broker_dir, ignore_errors=True)
        broker = Broker(broker_dir, ident.pki).start()
        say("demo: ", f"mosquitto listening on {broker.host}:{broker.port} "
                      "(mutual TLS, identity as username)")
        observer = Observer(broker, on_line=on_line).start()
        (state / "state").mkdir(exist_ok=True)
        cfg = write_config(state / "edgebridge.conf", {
            "gateway": {"id": GATEWAY_ID, "name": GATEWAY_NAME,
                        "state_dir": state / "state", "log_level": "info"},
            "hsm": {"module": ident.token.module, "key": ident.token.uri,
                    "pin_file": ident.pin_file},
            "cloud": {"profile": "cumulocity", "host": broker.host, "port": broker.port,
                      "ca_file": broker.server_ca_file, "cert_file": ident.cert_file,
                      "keepalive": "60s"},
            **sensors(),
        })
        say("demo: ", f"starting {binary} -c {cfg.path}"
                      + (f" for {seconds:g}s" if seconds else " (Ctrl-C to stop)"))
        daemon = Daemon(cfg.path, env=ident.token.env, binary=binary,
                        out_file=state / "edgebridged.out").start()

        deadline = time.monotonic() + seconds if seconds else None
        while not stop.is_set():
            out = daemon.output
            if len(out) > printed:
                chunk = out[printed:]
                if not daemon.running or chunk.endswith("\n"):
                    cut = len(chunk)
                else:
                    cut = chunk.rfind("\n") + 1
                for text in chunk[:cut].splitlines():
                    say("", text)
                printed += cut
            if not daemon.running:
                say("demo: ", f"edgebridged exited with code {daemon.returncode}")
                rc = 1
                break
            if deadline and time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        say("demo: ", "interrupted")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a 2nd Ctrl-C must not skip cleanup
        try:
            if daemon is not None and daemon.running:
                drc = daemon.stop()
                for text in daemon.output[printed:].splitlines():
                    say("", text)
                if drc != expect.EXIT_OK:
                    say("demo: ", f"edgebridged stopped with code {drc}")
                    rc = rc or 1
        finally:
            try:
                if observer is not None:
                    observer.stop()
            finally:
                if broker is not None:
                    broker.stop()

    say("demo: ", f"{measurements} measurement line(s) received")
    if measurements == 0:
        say("demo: ", "error: no measurement arrived at the broker")
        return rc or 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
