"""Outcome vocabulary: a check that could not be made is `broken` (raise Broken or let a transport error
through); a check that was made and found the cluster wrong is `failed` (an AssertionError). Skipped means
not applicable (e.g. Docker on a node without Docker) or unsupported (old GPU) and carries the reason."""

from __future__ import annotations

from provision.context import DiscoveryError, NoHostAccess
from provision.hosts.results import HostUnreachable
from provision.kube import ClusterUnreachable, WaitTimeout


class Broken(RuntimeError):
    """The check could not be made (unreachable host, missing prerequisite, converger error)."""


BROKEN_TYPES = (Broken, HostUnreachable, ClusterUnreachable, WaitTimeout, DiscoveryError)
SKIP_TYPES = (NoHostAccess,)


def classify(exc: BaseException | None, skipped: bool) -> str:
    if skipped:
        return "skipped"
    if exc is None:
        return "passed"
    if isinstance(exc, AssertionError) or type(exc).__name__ == "Failed" or hasattr(exc, "observation"):
        return "failed"
    return "broken"
