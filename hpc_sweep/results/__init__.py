"""What a sweep found, read-only: status (the status snapshot and its table/json/csv/markdown renderings), analysis
(ranking, parameter effects, convergence, failures, advice: the notebook API re-exported as :mod:`hpc_sweep.api`),
report (the HTML or markdown report built from the analysis).

Room 9: may import every room below track; never writes the state.
"""
