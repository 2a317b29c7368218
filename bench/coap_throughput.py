#!/usr/bin/python3
"""CoAP over DTLS figures (bench/coap_client.c against tests/cloud/
tb_coap_server.c on loopback, the key on a SoftHSM2 token):

  handshake   DTLS 1.2 handshakes with the token's EC P-256 key, one after
              the other (median and minimum ms): includes the signature the
              token makes and the server's chain check
  requests    confirmable POSTs of a 60-byte telemetry body answered 2.01,
              per second, with NSTART 1 (RFC 7252's default: one in flight)
              and with NSTART 4 (the ratio is printed)

Needs build/bench/coap_client and build/tests/tb_coap_server (make bench
builds them).  Never fails for being slow; exit 1 only when something broke.

    /usr/bin/python3 bench/coap_throughput.py [--handshakes N] [--requests N]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness import Env  # noqa: E402
from harness.tbcoap import TbCoap  # noqa: E402


def run(env, cloud, handshakes, requests, nstart):
    out = subprocess.run(
        [str(REPO / "build" / "bench" / "coap_client"), cloud.host, str(cloud.port),
         str(cloud.server_ca_file), str(env.cert_file), env.token.module, env.token.uri,
         str(env.pin_file), str(handshakes), str(requests), str(nstart)],
        env={**env.token.env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        timeout=600)
    if out.returncode:
        raise SystemExit(f"coap_client failed: {out.stderr.strip()}")
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", out.stdout)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--handshakes", type=int, default=20)
    ap.add_argument("--requests", type=int, default=20000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="eb-coap-bench-") as d:
        env = Env(Path(d) / "env")
        cloud = TbCoap(Path(d) / "coap", env.pki).start()
        try:
            one = run(env, cloud, args.handshakes, args.requests, 1)
            four = run(env, cloud, 3, args.requests, 4)
        finally:
            cloud.stop()
            env.close()
    print(f"DTLS handshake with the token key: median {one['handshake_ms_median']:.1f} ms, "
          f"min {one['handshake_ms_min']:.1f} ms ({args.handshakes} handshakes)")
    print(f"confirmable POSTs, NSTART 1: {one['requests_per_s']:.0f}/s")
    print(f"confirmable POSTs, NSTART 4: {four['requests_per_s']:.0f}/s "
          f"(x{four['requests_per_s'] / one['requests_per_s']:.2f} of NSTART 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
