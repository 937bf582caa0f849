"""Upper bounds of the planner's search knobs, shared by ``PlanRequest`` / ``compare_deployments`` and the CLI flags
``--max-devices``, ``--bisect-steps`` and ``--workers`` (a module without imports, so the CLI reads it at start-up).

- ``MAX_DEVICES``: the screen enumerates fleets of up to this many devices per pool side; 4096 screens in
  seconds (65,536 takes minutes and gigabytes), and no single-model fleet a simulation could check is larger.
- ``MAX_BISECT_STEPS``: each step halves the maximum rate's bracket geometrically, one more simulation per
  candidate; 20 steps pin it to a millionth of the bracket, far below the simulation's own noise.
- ``MAX_WORKERS``: local processes, one per simulation at a time. A fixed cap (not a multiple of the CPU
  count, so a command valid on one machine is valid on every other) that keeps a typo (``--workers 100000``)
  from forking a process storm; no more processes than simulations are started in any case.
"""

MAX_DEVICES = 4096
MAX_BISECT_STEPS = 20
MAX_WORKERS = 256
