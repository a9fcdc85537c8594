@per_node
Feature: GPU nodes are healthy hosts
  Every GPU node is Ready, its NVIDIA driver works and is recent enough, and it has the GPUs it should.

  Background:
    Given a GPU node of the cluster
    And its host driver is marked ready for the GPU Operator

  Scenario: The node is Ready
    Then the node reports Ready

  Scenario: The NVIDIA driver works and is at least the minimum version
    Then nvidia-smi works and the driver is at least version 470

  Scenario: The node has its expected physical GPUs
    Then the node has its expected number of physical GPUs
