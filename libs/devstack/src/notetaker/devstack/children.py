"""Child processes of a dev-stack run (the demo, a test run, a benchmark): started so that they
die with the run, and looked for afterwards in case anything survived.

Every child gets `NOTETAKER_RUN_OWNER=<pid>:<start time>` of the run in its environment, and so
does everything it starts (PostgreSQL's backends, ...). With that tag a run lists what it left
behind, and the next run reaps what a killed run orphaned. On Linux each child started from the
main thread also asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), so
`kill -9` of the run takes its children along: start children from the main thread (the event
loop's), and wait for them elsewhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

OWNER_VARIABLE = "NOTETAKER_RUN_OWNER"
PR_SET_PDEATHSIG = 1


def tag_of(process: psutil.Process) -> str:
    """A process's owner tag: its pid and start time, so a reused pid never matches."""
    return f"{process.pid}:{process.create_time():.2f}"


def own_tag() -> str:
    """This process's tag, which the children it starts carry."""
    return _tag_of_pid(os.getpid())


@functools.cache
def _tag_of_pid(pid: int) -> str:
    return tag_of(psutil.Process(pid))


def _die_with_parent(parent: int) -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:  # runs in the child between fork and exec
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in its own session (Ctrl-C in a terminal reaches only us, and we stop the
    children in order), logging to `log_path`, tagged with this run and dying with it."""
    environment = dict(os.environ if env is None else env)
    environment[OWNER_VARIABLE] = own_tag()
    # The kernel ties PR_SET_PDEATHSIG to the thread that forks: a child started from a worker
    # thread would die with that thread, so only the main thread's children get it.
    main = threading.current_thread() is threading.main_thread()
    preexec = _die_with_parent(os.getpid()) if main and sys.platform == "linux" else None
    with log_path.open("ab") as log_file:  # the child keeps its own descriptor
        return subprocess.Popen(
            list(argv),
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            user=user,
            start_new_session=True,
            preexec_fn=preexec,
        )


def _owner_tag(process: psutil.Process) -> str | None:
    try:
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        tag: str | None = process.environ().get(OWNER_VARIABLE)
        return tag
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def survivors(tag: str) -> list[psutil.Process]:
    """Processes still running that a run with this tag started (not the run itself)."""
    me = os.getpid()
    return [p for p in psutil.process_iter() if p.pid != me and _owner_tag(p) == tag]


# psutil derives a start time from the boot time, which each process reads once from the
# kernel and which the kernel reports a second off after a clock adjustment: another process may
# compute a live owner's start time differently from the owner's own tag.
START_TIME_TOLERANCE_SECONDS = 2.0


def _alive(tag: str) -> bool:
    pid, _, started = tag.partition(":")
    try:
        process = psutil.Process(int(pid))
        return abs(process.create_time() - float(started)) < START_TIME_TOLERANCE_SECONDS
    except (ValueError, psutil.NoSuchProcess):
        return False


def orphans() -> list[psutil.Process]:
    """Processes started by a run that is gone (killed before it could stop them)."""
    found = []
    owners: dict[str, bool] = {}
    for process in psutil.process_iter():
        tag = _owner_tag(process)
        if tag is None or process.pid == os.getpid():
            continue
        if tag not in owners:
            owners[tag] = _alive(tag)
        if not owners[tag]:
            found.append(process)
    return found


def describe(process: psutil.Process) -> str:
    try:
        command = " ".join(process.cmdline()) or process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        command = "(gone)"
    return f"pid {process.pid}: {command[:160]}"


def reap(processes: list[psutil.Process], timeout: float = 5.0) -> list[str]:
    """Stop these processes (SIGTERM, then SIGKILL after `timeout`); describe what was stopped."""
    described = [describe(p) for p in processes]
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=timeout)
    return described


def main() -> None:
    """`python -m notetaker.devstack.children`: stop what killed runs left behind."""
    reaped = reap(orphans())
    print(f"stopped {len(reaped)} processes left behind by runs that were killed")
    for line in reaped:
        print(f"  {line}")


if __name__ == "__main__":
    main()
