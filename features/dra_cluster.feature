@cluster @dra
Feature: The GPU stack runs through Dynamic Resource Allocation
  With stack = "dra" the GPU Operator runs the GPUCluster stack: the NVIDIA DRA driver publishes the GPUs as
  ResourceSlices and workloads ask for them with ResourceClaims (docs/dra.md). Skipped with stack = "clusterpolicy".

  Background:
    Given the GPU Operator is installed

  Scenario: The cluster runs the GPU stack of the desired state
    Then the cluster runs exactly the desired GPU stack

  Scenario: The DRA API is served
    Then the apiserver serves resource.k8s.io/v1

  Scenario: The NVIDIA DeviceClasses exist
    Then the DeviceClasses of the NVIDIA DRA driver exist

  Scenario: GPUCluster is ready
    Then GPUCluster gpu-cluster is "ready"

  Scenario: The DRA driver's controller is ready
    Then the DRA driver's controller is ready

  Scenario: No GPU claim is held for a pod that no longer exists
    Then no gpu.nvidia.com ResourceClaim is held for a pod that no longer exists
