@per_node @clusterpolicy
Feature: GPUs are advertised and shared by time-slicing
  Each GPU node advertises its physical GPUs times the time-slicing replicas, and GPU feature discovery
  labels agree.

  Background:
    Given a GPU node of the cluster
    And time-slicing is configured with 4 replicas per GPU

  Scenario: The node advertises physical GPUs times replicas
    Then allocatable nvidia.com/gpu equals physical GPUs times replicas

  Scenario: GPU feature discovery labels describe the shared GPUs
    Then the GPU feature discovery labels show the physical count, replicas and a shared product
