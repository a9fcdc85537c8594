@per_node @host
Feature: The GPU host itself can run CUDA
  Host-level checks, runnable on a GPU machine with no Kubernetes (pytest features/ --host-only -m host):
  the driver works, the GPUs are there, a native CUDA program runs, and the container runtimes the node
  has (k8s-snap's containerd, Docker) know the nvidia runtime. A runtime the host does not have is not
  applicable (skipped with the reason), never a failure.

  Background:
    Given a GPU host

  Scenario: The host's NVIDIA driver works and is at least the minimum version
    Then nvidia-smi works and the driver is at least version 470

  Scenario: The host has its expected physical GPUs
    Then the node has its expected number of physical GPUs

  @workload
  Scenario: A native CUDA vector addition passes on the host
    Then a CUDA vector addition built with nvcc on the host prints "Test PASSED"

  Scenario: The host's containerd knows the nvidia runtime
    Then the host's containerd has runc as default and the nvidia runtime

  Scenario: The host's Docker knows the nvidia runtime
    Then /etc/docker/daemon.json has the nvidia runtime
