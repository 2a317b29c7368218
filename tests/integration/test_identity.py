"""Device identity at start: PIN, certificate CN, chain, validity."""

from __future__ import annotations

import re

import pytest

from harness import PKCS11_SPY_MODULE, Pki, expect

WRONG_PIN = "wr0ng-PIN-0815"
EXIT_TIMEOUT = 20


def c_login_calls(spy_log) -> int:
    # pkcs11-spy writes "<n>: C_Login" for every call
    return len(re.findall(r"^\d+: C_Login\s*$", spy_log.read_text(errors="replace"), re.M))


def test_wrong_pin_exits_77_after_one_login(env):
    spy_log = env.dir / "pkcs11-spy.log"
    bad = env.write_pin("wrong-pin", WRONG_PIN)
    env.write_config(hsm={"module": PKCS11_SPY_MODULE, "pin_file": bad})
    env.start_broker()
    d = env.daemon(env=env.use_pkcs11_spy(spy_log))
    rc = d.wait(EXIT_TIMEOUT)
    assert rc == expect.EXIT_NOPERM, d.output
    assert expect.log_re("pin_incorrect").search(d.output), d.output
    assert spy_log.exists(), "pkcs11-spy was not loaded (hsm.module ignored?)"
    assert c_login_calls(spy_log) == 1, "wrong PIN must be tried exactly once"
    assert WRONG_PIN not in d.output and env.pin not in d.output
    assert env.gateway_id not in env.broker.client_ids()


def test_right_pin_through_spy_logs_in_once(env):
    """Control for the spy test above: the spy setup itself works."""
    spy_log = env.dir / "pkcs11-spy.log"
    env.write_config(hsm={"module": PKCS11_SPY_MODULE})
    env.start_broker()
    d = env.daemon(env=env.use_pkcs11_spy(spy_log))
    d.wait_for_log(env.connected_re(), timeout=EXIT_TIMEOUT)
    assert c_login_calls(spy_log) >= 1
    assert d.stop() == expect.EXIT_OK, d.output
    assert env.pin not in d.output


BAD_CHAINS = {
    # case: (how to make cert_file, expected LOG pattern)
    "cn_mismatch": (lambda env: env.issue_device_chain("other-cn.pem", cn="gw-9999"),
                    "cn_mismatch"),
    "leaf_only": (lambda env: env.issue_device_chain("leaf-only.pem", variant="leaf"),
                  "chain_missing_ca"),
    "without_root": (lambda env: env.issue_device_chain("no-root.pem",
                                                        variant="leaf+intermediate"),
                     "chain_missing_ca"),
    "wrong_order": (lambda env: env.issue_device_chain("wrong-order.pem",
                                                       variant="wrong-order"),
                    "chain_order"),
    "expired": (lambda env: env.issue_device_chain("expired.pem", **Pki.expired_window()),
                "cert_expired"),
    "other_key": (lambda env: env.pki.client_cert(env.gateway_id).write_chain(
        env.dir / "other-key.pem"), "cert_key_mismatch"),
}


@pytest.mark.parametrize("case", list(BAD_CHAINS))
def test_bad_device_certificate_exits_78(env, case):
    make, pattern = BAD_CHAINS[case]
    env.write_config(cloud={"cert_file": make(env)})
    env.start_broker()
    d = env.daemon()
    rc = d.wait(EXIT_TIMEOUT)
    assert rc == expect.EXIT_CONFIG, d.output
    assert expect.log_re(pattern).search(d.output), d.output
    assert env.gateway_id not in env.broker.client_ids(), "must fail before connecting"
    assert env.pin not in d.output
