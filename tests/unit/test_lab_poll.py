"""lab/controlplane.py poll (tenacity): retried while NotYet, a clear LabError at the deadline, any other error
at once."""

from __future__ import annotations

import pytest

from lab.controlplane import LabError, NotYet, poll


def test_not_yet_is_retried_until_it_answers() -> None:
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise NotYet("connection refused")

    poll("x", check, timeout=5, every=0.01)
    assert len(calls) == 3


def test_the_deadline_names_what_the_last_reason_and_the_log() -> None:
    def check() -> None:
        raise NotYet("connection refused")

    with pytest.raises(LabError, match=r"etcd not healthy after 0s \(connection refused\):\nlast log line"):
        poll("etcd not healthy", check, timeout=0.05, every=0.01, tail=lambda: "last log line")


def test_another_error_stops_at_once() -> None:
    calls = []

    def check() -> None:
        calls.append(1)
        raise LabError("etcd exited")

    with pytest.raises(LabError, match="etcd exited"):
        poll("x", check, timeout=5, every=0.01)
    assert calls == [1]


def test_kube_read_modify_write_retries_conflicts_only() -> None:
    """provision/kube.py update_with_retry (tenacity): a 409 re-reads and re-applies; another error, or a
    conflict on the last attempt, is raised."""
    from kubernetes.client.rest import ApiException

    from provision.hosts.guard import WRITE_GUARD
    from provision.kube import Kube

    kube = Kube.__new__(Kube)
    kube.writes = []
    reads, writes = [], []

    def write_failing(statuses):
        def write(obj):
            writes.append(obj)
            if statuses:
                raise ApiException(status=statuses.pop(0))
        return write

    def read():
        reads.append(1)
        return {"v": len(reads)}

    with WRITE_GUARD.allow("test"):
        assert kube.update_with_retry("patch x", read, lambda o: {**o, "x": 1}, write_failing([409, 409]))
        assert len(reads) == 3 and writes[-1] == {"v": 3, "x": 1} and kube.writes == ["patch x"]
        with pytest.raises(ApiException) as exc:
            kube.update_with_retry("patch x", read, lambda o: o, write_failing([409] * 5), attempts=3)
        assert exc.value.status == 409
        reads.clear()
        with pytest.raises(ApiException) as exc:
            kube.update_with_retry("patch x", read, lambda o: o, write_failing([500]))
        assert exc.value.status == 500 and len(reads) == 1
        assert kube.update_with_retry("patch x", read, lambda o: None, write_failing([])) is False
