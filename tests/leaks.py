"""The test run's leak check, a pytest plugin: before the first test it stops what a killed run
left behind; after the last fixture is torn down it looks for any process this run started that
is still running, reports it loudly, stops it and fails the run."""

from __future__ import annotations

from collections.abc import Generator

import psutil
import pytest

from notetaker.devstack import children

GRACE_SECONDS = 10.0  # a process stopped by the last teardown may take a moment to be gone


def _say(config: pytest.Config, line: str, **markup: bool) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line, **markup)
    else:
        print(line)


def pytest_configure(config: pytest.Config) -> None:
    left = children.reap(children.orphans())
    if left:
        _say(config, f"stopped {len(left)} processes that an earlier, killed run left behind:")
        for line in left:
            _say(config, f"  {line}", yellow=True)


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session) -> Generator[None, None, None]:
    yield  # the runner tears the session's fixtures down first
    tag = children.own_tag()
    alive = children.survivors(tag)
    if alive:
        _, alive = psutil.wait_procs(alive, timeout=GRACE_SECONDS)
    if not alive:
        _say(session.config, "leak check: no process this test run started is still running")
        return
    left = children.reap(alive)
    _say(
        session.config,
        f"LEAK: {len(left)} processes this test run started were still running after its"
        " last teardown (now stopped); the run fails:",
        red=True,
        bold=True,
    )
    for line in left:
        _say(session.config, f"  {line}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
