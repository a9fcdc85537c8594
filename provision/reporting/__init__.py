"""Run reports: per-node Allure results and HTML, the fleet matrix, exit codes and a secrets scan.

See docs/reports.md for the layout of reports/<run-id>/ and the decisions taken about Allure 3.
"""

from __future__ import annotations

import logging

# A library: warnings go to the application's logging set-up, never straight to stderr.
logging.getLogger(__name__).addHandler(logging.NullHandler())

CLUSTER_KEY = "_cluster"
"""Folder / links key for results that concern the whole cluster (no ``node`` label)."""

ALL_KEY = "_all"
"""Folder / links key for the whole-run report."""

NODE_LABEL = "node"
"""Allure label that names the node a scenario result concerns."""
