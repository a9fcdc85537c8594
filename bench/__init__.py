"""Fleet-scale benchmark of the suite against the lab (`python -m bench.run`, `make bench`); see docs/performance.md."""
