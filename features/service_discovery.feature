@cluster
Feature: The GPU Operator is discoverable by the platform
  The discovery ConfigMap thinkube-service-config describes the service and both of its endpoints.

  Background:
    Given the discovery ConfigMap is published

  Scenario: The discovery ConfigMap describes the GPU Operator
    Then the discovery ConfigMap has its labels and both endpoints
