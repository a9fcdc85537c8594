"""Binds every feature file in this folder to the step definitions in steps/ (pytest-bdd)."""

import pytest
from pytest_bdd import scenarios

from steps.given import *  # noqa: F403 - step definitions are fixtures found by name
from steps.then import *  # noqa: F403

# Each scenario runs once per GPU node (@per_node) or once for the cluster (@cluster); the parametrization
# is done by the plugin (gpu_conformance/plugin.py) on this fixture, which steps use only indirectly (pytest-bdd #620).
pytestmark = pytest.mark.usefixtures("gpu_node")

scenarios(".")
