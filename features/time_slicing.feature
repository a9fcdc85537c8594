@cluster @clusterpolicy
Feature: Time-slicing is configured for the whole cluster
  The time-slicing ConfigMap lives in the operator namespace with a valid config, and ClusterPolicy's
  device plugin points at it.

  Background:
    Given time-slicing is configured with 4 replicas per GPU

  Scenario: The time-slicing config is valid and wired into ClusterPolicy
    Then the time-slicing ConfigMap is valid with at least 2 replicas and ClusterPolicy uses it
