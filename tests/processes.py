"""Race-safe questions about processes a test saw start: a short-lived child can end (and its
/proc entry vanish) between being listed and being asked, which psutil reports as NoSuchProcess."""

from __future__ import annotations

import psutil


def command_line(process: psutil.Process) -> str:
    """``process``'s command line, or "" once it has ended."""
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def is_alive(process: psutil.Process) -> bool:
    """Running and not a zombie; False for one that ends while it is being asked."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
