"""Config validation from the command line: edgebridged -c FILE --check-config.

Every problem is one stderr line "FILE:LINE: message"; exit 78 if any."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, NamedTuple, Optional

import pytest

from harness import expect


class Problem(NamedTuple):
    file: Path
    line: Optional[int]
    msg: str


def problems(stderr: str) -> List[Problem]:
    out = []
    for text in stderr.splitlines():
        m = re.match(expect.CHECK_LINE_FILE_ONLY, text)
        if m:
            out.append(Problem(Path(m["file"]), int(m["line"]) if m["line"] else None,
                               m["msg"]))
    return out


def same_file(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def assert_problem(r, file, line: Optional[int], kind: str, line_required: bool = True):
    """Exit 78 and a stderr line FILE:LINE: <message matching CHECK[kind]>.
    line=None (missing key): FILE: or FILE:N: both accepted."""
    out = f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert r.returncode == expect.EXIT_CONFIG, out
    rx = expect.check_re(kind)
    found = [p for p in problems(r.stderr)
             if same_file(p.file, file) and (line is None or p.line == line)
             and rx.search(p.msg)]
    assert found, f"expected '{file}:{line}: <{expect.CHECK[kind]}>' in\n{out}"
    # every non-blank stderr line is a located problem (or a daemon log line)
    located = re.compile(expect.CHECK_LINE if line_required else expect.CHECK_LINE_FILE_ONLY)
    logline = re.compile(expect.LOG["line_format"], re.I)
    for text in r.stderr.splitlines():
        if text.strip():
            assert located.match(text) or logline.match(text), \
                f"stderr line without FILE:LINE: {text!r}\n{out}"
    return found


def assert_valid(r):
    assert r.returncode == expect.EXIT_OK, \
        f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert not [p for p in problems(r.stderr) if p.line is not None], r.stderr


# -- baseline ------------------------------------------------------------------------

def test_valid_config_passes_and_never_shows_pin(env):
    cfg = env.write_config()
    r = env.check_config(cfg)
    assert_valid(r)
    assert env.pin not in r.stdout + r.stderr


# -- single problems ------------------------------------------------------------------

@pytest.mark.parametrize("keys", [{"x": 1}, {}], ids=["with-key", "empty"])
def test_unknown_section(env, keys):
    """Reported at the [header] line, also when the section has no keys."""
    cfg = env.write_config(frobnicate=keys)
    assert_problem(env.check_config(cfg), cfg.path, cfg.line_of("", "frobnicate"),
                   "unknown_section")


def test_unknown_key(env):
    cfg = env.write_config(gateway={"colour": "blue"})
    assert_problem(env.check_config(cfg), cfg.path, cfg.line_of("colour", "gateway"),
                   "unknown_key")


@pytest.mark.parametrize("section,key,value,kind", [
    ("sensor.boiler", "interval", "10 parsecs", "bad_duration"),
    ("sensor.boiler", "interval", "1.5.s", "bad_duration"),
    ("cloud", "keepalive", "soon", "bad_duration"),
    ("sensor.boiler", "driver", "warp", "bad_value"),
    ("sensor.boiler", "waveform", "square-ish", "bad_value"),
    ("gateway", "log_level", "chatty", "bad_value"),
    ("cloud", "port", "eighty", "bad_value"),
    ("cloud", "port", "70000", "bad_value"),
], ids=lambda v: str(v).replace(" ", "_"))
def test_bad_value(env, section, key, value, kind):
    cfg = env.write_config(**{section.replace(".", "__"): {key: value}})
    assert_problem(env.check_config(cfg), cfg.path, cfg.line_of(key, section), kind)


def test_missing_gateway_id(env):
    cfg = env.write_config(gateway={"id": None})
    assert_problem(env.check_config(cfg), cfg.path, None, "missing_key",
                   line_required=False)


def test_gateway_id_with_colon(env):
    cfg = env.write_config(gateway={"id": "gw:0001"})
    assert_problem(env.check_config(cfg), cfg.path, cfg.line_of("id", "gateway"), "id_colon")


def test_world_readable_pin_file_refused(env):
    pin = env.write_pin("pin-0644", env.pin, mode=0o644)
    cfg = env.write_config(hsm={"pin_file": pin})
    r = env.check_config(cfg)
    assert_problem(r, cfg.path, cfg.line_of("pin_file", "hsm"), "pin_file_mode")
    assert env.pin not in r.stdout + r.stderr


@pytest.mark.parametrize("sep", ["?", ";"], ids=["query", "path-attr"])
def test_key_uri_with_pin_value_rejected(env, sep):
    cfg = env.write_config(hsm={"key": f"{env.token.uri}{sep}pin-value={env.pin}"})
    r = env.check_config(cfg)
    assert_problem(r, cfg.path, cfg.line_of("key", "hsm"), "pin_value")
    assert env.pin not in r.stdout + r.stderr, "the PIN from the URI was echoed"


def test_several_problems_all_reported(env):
    cfg = env.write_config(gateway={"colour": "blue"},
                           sensor__boiler={"interval": "10 parsecs"})
    r = env.check_config(cfg)
    assert_problem(r, cfg.path, cfg.line_of("colour", "gateway"), "unknown_key")
    assert_problem(r, cfg.path, cfg.line_of("interval", "sensor.boiler"), "bad_duration")


# -- conf.d -----------------------------------------------------------------------------

def _pins(env):
    good = env.write_pin("pin-0600", env.pin, mode=0o600)
    bad = env.write_pin("pin-0644", env.pin, mode=0o644)
    return good, bad


def test_confd_later_file_overrides_earlier_valid(env):
    good, bad = _pins(env)
    cfg = env.write_config()
    cfg.add_dropin("a-first.conf", hsm={"pin_file": bad})
    cfg.add_dropin("b-second.conf", hsm={"pin_file": good})
    assert_valid(env.check_config(cfg))


def test_confd_later_file_overrides_earlier_invalid(env):
    good, bad = _pins(env)
    cfg = env.write_config()
    cfg.add_dropin("a-first.conf", hsm={"pin_file": good})
    second = cfg.add_dropin("b-second.conf", hsm={"pin_file": bad})
    assert_problem(env.check_config(cfg), second.path, second.line_of("pin_file", "hsm"),
                   "pin_file_mode")


def test_confd_overrides_main_file(env):
    good, bad = _pins(env)
    cfg = env.write_config(hsm={"pin_file": bad})
    cfg.add_dropin("50-pin.conf", hsm={"pin_file": good})
    assert_valid(env.check_config(cfg))


def test_confd_problem_names_dropin_file_and_line(env):
    cfg = env.write_config()
    drop = cfg.add_dropin("20-extra.conf", text="# extra sensor\n[sensor.extra]\n"
                          "driver = sim\ninterval = 10 parsecs\nfragment = c8y_X\n"
                          "series = X\nunit = u\n")
    assert_problem(env.check_config(cfg), drop.path, 4, "bad_duration")


def test_confd_ignores_files_not_ending_in_conf(env):
    cfg = env.write_config()
    cfg.add_dropin("zz.conf.disabled", text="[bogus]\nnonsense = yes\n")
    cfg.add_dropin("README", text="not a config\n")
    assert_valid(env.check_config(cfg))
