"""Speed benchmarks: outside the default test run. Run with ``python -m pytest tests/benchmarks -s``;
each prints its figure and checks the goal stated in the issue."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
