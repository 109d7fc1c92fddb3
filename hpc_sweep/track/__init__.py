"""Following runs: poll (the poll's order of work), decide (one attempt's state from the scheduler's record and the
markers; lost and its grace), markers, progress (reading the logs, in workers for large sweeps), evidence
("completed" needs evidence of training), failure (why a task died, from its output), resume (when a run is
resumed), snapshot (status.json and status.md), edited and duplicates (what the user must hear of once).

Room 10, the highest: may import every room below it (a poll submits and writes the status snapshot).
"""
