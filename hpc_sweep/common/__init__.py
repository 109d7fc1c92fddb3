"""Shared pieces that know nothing of sweeps: errors (UserError, RuntimeFailure), faults (fault injection points),
atomicio (atomic file writes), durations, dotted (dotted keys into nested configs), formats and yamltext (TOML/YAML
read and written keeping their text), layout (SweepPaths: where everything of a sweep lives), jobmap (the index
map beside each job script), logtail (reading what a log gained), and shell -- the one place that runs scheduler
commands.

Room 1 of the house (README "Where things are"): imports nothing of hpc_sweep outside this package.
"""
