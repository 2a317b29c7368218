"""Fixtures for the edgebridged integration tests (harness in tests/harness)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import Env, Pki, daemon_binary  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _failed(request) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """One root -> intermediate hierarchy for the whole run (fast)."""
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def edgebridged() -> Path:
    """The daemon binary; missing binary is a FAILURE, not a skip."""
    path = daemon_binary()
    if not path.is_file():
        pytest.fail(f"edgebridged binary not found at {path}: run `make` first "
                    "(or set EDGEBRIDGED=/path/to/edgebridged)", pytrace=False)
    return path


@pytest.fixture
def make_env(tmp_path, pki, request):
    """Factory: make_env(**Env kwargs) -> Env in its own dir; all closed at teardown.
    On failure, prints each daemon's output and the broker log tail."""
    envs = []

    def factory(**kw) -> Env:
        kw.setdefault("pki", pki)
        e = Env(tmp_path / f"env{len(envs)}", **kw)
        envs.append(e)
        return e

    yield factory
    errors = []
    for e in envs:
        if _failed(request):
            for d in e._daemons:
                print(f"--- {d.out_file} (rc={d.returncode}) ---\n{d.output}")
            print(f"--- broker log {e.broker.log_file} (tail) ---\n{e.broker.log[-4000:]}")
        try:
            e.close()
        except Exception as exc:  # pragma: no cover
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def env(make_env, edgebridged) -> Env:
    """A complete Env (broker not started) for tests that run the daemon."""
    return make_env()


@pytest.fixture
def harness_env(make_env) -> Env:
    """Same as env, but usable without the daemon binary (harness self-tests)."""
    return make_env()
