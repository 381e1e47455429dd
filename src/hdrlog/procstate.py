"""Whether a process has exited, as hdrlog's probes see it."""

from __future__ import annotations

__all__ = ["exited"]


def exited(pid: int) -> bool:
    """No such process, or a zombie: its /proc/PID still exists, but its memory and file descriptors (and so
    any probes on it) are already gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True
