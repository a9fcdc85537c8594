@per_node
Feature: MIG partitions the GPUs of a node as its desired state asks
  A node is in MIG mode when the desired state (setting mig_profiles, by node name or GPU product) or its
  nvidia.com/mig.config label asks for a MIG profile (a mig-parted config other than all-disabled). The MIG
  manager applies it; the device plugin advertises the MIG devices under its MIG strategy (single:
  nvidia.com/gpu, mixed: nvidia.com/mig-<profile>), time-slicing multiplies them, GPU feature discovery labels
  them and DCGM reports each instance. Nodes without MIG skip these scenarios and are judged as before.

  Background:
    Given a GPU node of the cluster
    And its MIG configuration is applied

  Scenario: The MIG manager applied the node's MIG profile
    Then the MIG manager has applied the node's MIG profile

  Scenario: nvidia-smi lists the MIG devices of the profile
    Then nvidia-smi lists the MIG devices the profile gives each GPU

  Scenario: The MIG devices are advertised
    Then the node advertises its MIG devices under the resource of its MIG strategy

  Scenario: GPU feature discovery labels the MIG devices
    Then GPU feature discovery labels the MIG devices

  Scenario: DCGM reports each MIG instance
    Then the DCGM exporter reports every MIG instance
