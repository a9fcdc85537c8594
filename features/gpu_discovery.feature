@cluster
Feature: The cluster's GPU nodes are found
  GPU nodes are found at run time: by the label nvidia.com/gpu.present=true, falling back to NFD's
  feature.node.kubernetes.io/pci-10de.present=true, or by name (--gpu-nodes). Finding none is a failure:
  an audit of no GPU node must never pass.

  Scenario: GPU nodes are found in the cluster
    Then at least one GPU node is found
