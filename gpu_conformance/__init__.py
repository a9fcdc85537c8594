"""The GPU node conformance suite as a pytest plugin (entry point ``pytest11``: gpu_conformance.plugin).

Install the project (``pip install .`` or its wheel), copy ``features/`` anywhere and run ``pytest features/``.
"""
