@per_node
Feature: GPU metrics are exported for every GPU
  The node's DCGM exporter answers and reports a metric for every GPU UUID that nvidia-smi lists: the
  nvidia-dcgm-exporter pod of the ClusterPolicy stack, or the nvidia-dcgm-exporter-dra pod of the GPUCluster (DRA)
  stack (docs/dra.md).

  Background:
    Given a GPU node of the cluster
    And the GPU Operator is installed

  Scenario: The DCGM exporter reports every GPU of the node
    Then the DCGM exporter on the node reports a metric for every GPU of nvidia-smi
