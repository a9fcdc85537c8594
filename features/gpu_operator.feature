@cluster
Feature: The NVIDIA GPU Operator is installed and healthy
  The gpu-operator release is deployed at the expected chart version with values that work on k8s-snap,
  the operator and all its operands are ready on the GPU nodes, and the nvidia RuntimeClass exists.

  Background:
    Given the GPU Operator is installed

  Scenario: The gpu-operator release is deployed at the expected chart version
    Then the Helm release is deployed at the expected chart version

  Scenario: The operator Deployment is available
    Then the gpu-operator Deployment is available

  @clusterpolicy
  Scenario: ClusterPolicy is ready
    Given containerd on every GPU node has loaded the NVIDIA runtime
    And time-slicing is configured with 4 replicas per GPU
    Then ClusterPolicy cluster-policy is "ready"

  @clusterpolicy
  Scenario: Every operand runs on every GPU node
    Given containerd on every GPU node has loaded the NVIDIA runtime
    And time-slicing is configured with 4 replicas per GPU
    Then every operand DaemonSet has a ready pod on each GPU node

  @clusterpolicy
  Scenario: The nvidia RuntimeClass exists
    Then RuntimeClass "nvidia" exists with handler "nvidia"
