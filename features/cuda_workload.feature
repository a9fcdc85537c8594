@per_node @workload @clusterpolicy
Feature: A CUDA workload runs on every GPU node
  A CUDA vector addition pod pinned to the node, with runtimeClassName nvidia and one nvidia.com/gpu,
  succeeds and prints "Test PASSED". The pod is removed afterwards.

  Background:
    Given a GPU node of the cluster
    And time-slicing is configured with 4 replicas per GPU

  Scenario: CUDA vector addition passes on the node
    Then a CUDA vectoradd pod on the node exits 0 and prints "Test PASSED"
