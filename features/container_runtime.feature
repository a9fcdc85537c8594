@per_node @clusterpolicy
Feature: The container runtime can run GPU containers
  containerd on each GPU node imports the runc and nvidia drop-ins from the directory it really reads,
  ends up with runc as default and nvidia as an extra runtime, and never meets a drop-in newer than its
  root config. Nodes that also run Docker have the nvidia runtime in Docker's daemon.json.

  Background:
    Given a GPU node of the cluster
    And containerd on the node has loaded the NVIDIA runtime

  Scenario: The runc and nvidia drop-ins are where containerd imports them
    Then the runc and nvidia drop-ins are in a directory containerd imports

  Scenario: containerd's effective configuration has runc as default and nvidia
    Then containerd's effective runtimes include runc as default and nvidia

  Scenario: No containerd drop-in is newer than the root config
    Then no containerd drop-in has a higher version than the root config

  Scenario: Docker knows the nvidia runtime
    Given Docker on the node is configured with the nvidia runtime
    Then /etc/docker/daemon.json has the nvidia runtime

  Scenario: The node has what its runtime mode needs
    Then the node has what its runtime mode needs
