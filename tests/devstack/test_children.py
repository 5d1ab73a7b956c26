"""No process outlives the test run that started it: a failing run reports and stops what it
left, a killed run takes its children along, and the next run (or the cleanup command) stops
what an earlier run orphaned. Each case runs a small pytest session of its own, with the same
leak-check plugin `make test` uses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from notetaker.devstack.children import OWNER_VARIABLE

REPO = Path(__file__).resolve().parents[2]

RUN_STACK = """
    import asyncio, json, os
    from pathlib import Path
    from notetaker.devstack.stack import start_stack

    def started(tmp_path: Path) -> list[int]:
        stack = asyncio.run(start_stack(workdir=tmp_path / "stack"))
        pids = [p.process.pid for p in stack.processes.values()]
        Path(os.environ["PIDS_FILE"]).write_text(json.dumps(pids))
        return stack
"""


def run_pytest(tmp_path: Path, test_source: str, pids_file: Path) -> subprocess.Popen[str]:
    """A pytest session of its own over one test file, with the leak-check plugin."""
    test_file = tmp_path / "inner" / "test_inner.py"
    test_file.parent.mkdir()
    test_file.write_text(textwrap.dedent(test_source))
    # The real stack's own settings: nothing named by URL, so it starts its own processes.
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTETAKER_")}
    env["PIDS_FILE"] = str(pids_file)
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "tests.leaks", "-c", os.devnull, "-q",
         "-p", "no:cacheprovider", "--rootdir", str(test_file.parent), str(test_file)],
        cwd=REPO,
        env=env,
        # SIGINT as a terminal's process has it: a run started in the background (`make test &`,
        # CI runners) inherits it ignored, and an ignored SIGINT would never interrupt the run.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def pids_written(pids_file: Path, run: subprocess.Popen[str], timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while not pids_file.exists() or not pids_file.read_text():
        if run.poll() is not None:
            raise AssertionError(f"the inner run ended before it started its children:\n{out(run)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the inner run started no children in {timeout:.0f}s")
        time.sleep(0.05)
    pids: list[int] = json.loads(pids_file.read_text())
    return pids


def out(run: subprocess.Popen[str]) -> str:
    try:
        stdout, _ = run.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        run.kill()
        stdout, _ = run.communicate()
        raise AssertionError(
            f"the inner run still ran 120 s later; its output:\n{stdout}"
        ) from None
    return stdout


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def all_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    """The pids still running once `timeout` has passed (waits only while some are)."""
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def test_a_failing_run_on_the_real_stack_stops_every_process_it_started(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids.json"
    run = run_pytest(
        tmp_path,
        RUN_STACK
        + """
    import pytest

    @pytest.fixture
    def stack(tmp_path):
        running = started(tmp_path)
        yield running
        running.stop()

    def test_fails(stack):
        assert False, "a test that fails with the stack running"
    """,
        pids_file,
    )
    output = out(run)
    assert run.returncode == 1, output
    assert "a test that fails with the stack running" in output
    assert "leak check: no process this test run started is still running" in output
    pids = json.loads(pids_file.read_text())
    assert len(pids) == 3  # kafka, postgres, s3
    assert all_gone(pids, timeout=0) == []


def test_a_process_a_run_forgets_to_stop_is_reported_stopped_and_fails_the_run(
    tmp_path: Path,
) -> None:
    pids_file = tmp_path / "pids.json"
    run = run_pytest(
        tmp_path,
        """
    import json, os
    from pathlib import Path
    from notetaker.devstack.children import spawn

    def test_passes_but_forgets_its_child(tmp_path):
        child = spawn(["sleep", "600"], tmp_path / "sleep.log")
        Path(os.environ["PIDS_FILE"]).write_text(json.dumps([child.pid]))
    """,
        pids_file,
    )
    output = out(run)
    assert "1 passed" in output
    assert run.returncode == 1, output  # the test passed; the leak fails the run
    assert "LEAK: 1 processes this test run started were still running" in output
    assert "sleep 600" in output
    assert all_gone(json.loads(pids_file.read_text())) == []


def test_a_run_killed_with_sigkill_takes_the_whole_stack_along(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids.json"
    run = run_pytest(
        tmp_path,
        RUN_STACK
        + """
    import time

    def test_blocks_with_the_stack_running(tmp_path):
        started(tmp_path)
        time.sleep(600)
    """,
        pids_file,
    )
    try:
        pids = pids_written(pids_file, run)
        assert all(running(pid) for pid in pids)
        run.send_signal(signal.SIGKILL)
        run.wait(10)
        assert all_gone(pids) == [], [psutil.Process(p).cmdline() for p in all_gone(pids, 0)]
    finally:
        run.kill()
        run.communicate()


def test_a_run_interrupted_with_ctrl_c_stops_the_stack_and_checks(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids.json"
    run = run_pytest(
        tmp_path,
        RUN_STACK
        + """
    import time, pytest

    @pytest.fixture
    def stack(tmp_path):
        running = started(tmp_path)
        yield running
        running.stop()

    def test_blocks_with_the_stack_running(stack):
        Path(os.environ["PIDS_FILE"] + ".running").write_text("1")
        time.sleep(600)
    """,
        pids_file,
    )
    try:
        pids = pids_written(pids_file, run)
        # Ctrl-C while the test runs (its fixtures set up), as a user interrupts a long test.
        running_file = Path(f"{pids_file}.running")
        deadline = time.monotonic() + 60
        while not running_file.exists():
            assert run.poll() is None, out(run)
            assert time.monotonic() < deadline, "the inner test never started"
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
        output = out(run)
    finally:
        run.kill()
    assert "KeyboardInterrupt" in output
    assert "leak check: no process this test run started is still running" in output
    assert all_gone(pids, timeout=0) == []


@pytest.mark.parametrize(
    "cleanup",
    [
        ["-m", "pytest", "-p", "tests.leaks", "-c", os.devnull, "-q", "--co", "tests/leaks.py"],
        ["-m", "notetaker.devstack.children"],
    ],
    ids=["the next test run", "the cleanup command"],
)
def test_what_a_killed_run_orphaned_is_stopped_by(cleanup: list[str]) -> None:
    # An orphan as a SIGKILLed run leaves it where PR_SET_PDEATHSIG is not to be had: tagged
    # with an owner that no longer runs.
    gone_owner = f"{2**22 + 1}:1.00"  # above Linux's pid_max, so no process has that pid
    orphan = subprocess.Popen(
        ["sleep", "600"], env={**os.environ, OWNER_VARIABLE: gone_owner}, start_new_session=True
    )
    try:
        done = subprocess.run(
            [sys.executable, *cleanup], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert f"pid {orphan.pid}: sleep 600" in done.stdout, done.stdout + done.stderr
        assert orphan.wait(10) == -signal.SIGTERM
    finally:
        orphan.kill()
        orphan.wait()
