"""The convergers, in the order their dependencies give (see provision/engine.py)."""

from provision.converge.cluster import Discovery, TimeSlicing
from provision.converge.distribution import DistributionGate
from provision.converge.hosts import DockerRuntime, HostDriver, RuncDropIn
from provision.converge.mig import MigConfig
from provision.converge.operator import ContainerdRestart, OperatorRelease


def all_convergers() -> list:
    return [DistributionGate(), DockerRuntime(), HostDriver(), RuncDropIn(), OperatorRelease(), ContainerdRestart(),
            MigConfig(), TimeSlicing(), Discovery()]
