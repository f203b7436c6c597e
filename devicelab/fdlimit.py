"""Open files: what a run of many sockets needs from the process's descriptor limit.

A thousand Realtime subscribers and the reference server they talk to live in one
process, two descriptors a subscriber; many desktops and systemd units start processes
with a soft limit of 1024. Over it, asyncio's accept loop logged "Too many open files"
millions of times (gigabytes of stderr) and the checks blamed the server. Raising the soft
limit up to the hard one is every process's right; past the hard one only the user can go.
"""

from __future__ import annotations

from devicelab.errors import EnvironmentProblem

__all__ = ["ensure_open_files"]


def ensure_open_files(needed: int, what: str, *, fewer: str = "") -> int:
    """Make sure this process may hold ``needed`` open files: raise its soft limit
    (RLIMIT_NOFILE) towards the hard one when it is lower. ``what`` names the need in
    the error ("1,000 Realtime subscribers"), ``fewer`` the option that asks for less.

    Returns the soft limit in force. Raises EnvironmentProblem (exit 3) when even the hard
    limit is lower than ``needed``. Where the platform has no such limit: no-op.
    """
    try:
        import resource
    except ImportError:  # not on POSIX: nothing to raise
        return needed
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    if soft == unlimited or soft >= needed:
        return needed if soft == unlimited else soft
    if hard != unlimited and hard < needed:
        raise EnvironmentProblem(
            f"{what} need about {needed:,} open files; this process may open {hard:,}"
            " (its hard limit)",
            hint=f"raise it (as root: ulimit -n {needed}; systemd: LimitNOFILE={needed})"
            + (f", or {fewer}" if fewer else ""),
        )
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    except (ValueError, OSError) as exc:  # a platform cap below the hard limit (macOS)
        raise EnvironmentProblem(
            f"{what} need about {needed:,} open files; raising this process's limit from"
            f" {soft:,} failed: {exc}",
            hint=f"raise it before starting (ulimit -n {needed})"
            + (f", or {fewer}" if fewer else ""),
        ) from exc
    return needed
