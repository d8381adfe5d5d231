"""The runner's children: started to die with it (Linux's parent-death signal, even when the
runner is killed), and stopped with their kernels, which papermill starts in sessions of their
own."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@functools.cache
def _prctl() -> Any:
    """libc's prctl on Linux, else None; loaded before any fork, so children only call it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def child_setup() -> Callable[[], None] | None:
    """A preexec_fn that has Linux send the child SIGTERM when its parent dies, even by SIGKILL:
    papermill runs in a session of its own, which nothing else would reach. The signal follows
    the thread that forked, so each child is started and waited for by one thread."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent, term = os.getpid(), int(signal.SIGTERM)

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, term, 0, 0, 0)
        if os.getppid() != parent:  # the runner died before prctl took effect
            os.kill(os.getpid(), term)

    return setup


def _proc_stat(pid: int) -> list[str] | None:
    """The fields after the command name in /proc/PID/stat (state, parent, ...), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (OSError, ValueError):
        return None


def descendants(pid: int) -> list[int]:
    """pid's children, their children and so on (from /proc on Linux; elsewhere none)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        fields = _proc_stat(entry)
        if fields and len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(entry)
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def alive(pid: int) -> bool:
    if os.path.isdir("/proc"):
        fields = _proc_stat(pid)
        return fields is not None and bool(fields) and fields[0] != "Z"  # a zombie has ended
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def signal_group(pid: int, signum: int) -> None:
    """Signals pid's process group where pid leads one (papermill and kernels lead their own
    sessions), else pid alone; never the runner's own group."""
    try:
        group = os.getpgid(pid)
        if group == pid and group != os.getpgrp():
            os.killpg(group, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
