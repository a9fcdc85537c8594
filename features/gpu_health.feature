@per_node @anywhere
Feature: The node's GPUs are healthy
  Configuration can stay right while a GPU degrades: Xid errors, uncorrectable memory errors, spare rows used up,
  a narrower PCIe link, throttling, a GPU that fell off the bus. Read from one `nvidia-smi -q -x`, the PCI bus and
  the kernel log of the host (one host round trip per node) and the node's DCGM exporter; runs in cluster audits
  and in --host-only runs. Thresholds are settings ([tool.gpu-conformance.health] in pyproject.toml). What the
  driver does not report ([N/A], Not Supported) is not applicable, never a failure. In an API-only audit
  (--host-backend none) the Xid check still reads the DCGM exporter; the others are skipped.

  Background:
    Given a GPU host

  Scenario: No GPU of the node reported a critical Xid error
    Then no GPU of the node reported a critical Xid error within the health window

  Scenario: The GPUs' memory is healthy
    Then no GPU has uncorrectable ECC errors, a pending row remap or a remapping failure

  Scenario: The GPUs' PCIe links run at their maximum generation and width
    Then every GPU's PCIe link runs at its maximum generation and width

  Scenario: No GPU is slowed down by hardware, heat or the power brake
    Then no GPU's clocks are held back by a hardware, thermal or power-brake slowdown

  Scenario: Every NVIDIA GPU on the PCI bus is listed by nvidia-smi
    Then every NVIDIA GPU on the PCI bus is listed by nvidia-smi

  Scenario: Persistence mode is as the desired state asks
    Then persistence mode and the persistence daemon are as the desired state asks
