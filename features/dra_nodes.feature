@per_node @dra
Feature: Every GPU node publishes its GPUs through DRA
  The node's DRA kubelet plugin publishes one device per GPU with nvidia-smi's UUIDs and the host's driver, the
  node does not also advertise nvidia.com/gpu, and a pod gets a GPU only through a ResourceClaim. Skipped with
  stack = "clusterpolicy".

  Background:
    Given a GPU node of the cluster
    And the GPU Operator is installed

  Scenario: The DRA kubelet plugin runs on the node
    Then the DRA kubelet plugin pod on the node is ready

  Scenario: The node's ResourceSlices list its GPUs as nvidia-smi does
    Then the node's ResourceSlices list one device per GPU with nvidia-smi's UUIDs and driver version

  Scenario: The node's GPUs are not advertised twice
    Then the node does not also advertise nvidia.com/gpu

  @workload
  Scenario: A pod with a GPU claim runs CUDA on the node
    Then a pod with a ResourceClaim for one gpu.nvidia.com device on the node prints "Test PASSED" and its claim is released

  @workload
  Scenario: A pod without a GPU claim is given no GPU
    Then a pod without a ResourceClaim on the node sees no /dev/nvidia* device

  @workload
  Scenario: Two pods share one GPU through one claim when sharing is asked for
    Then two pods naming one ResourceClaim with the desired GPU sharing on the node both print "Test PASSED"
