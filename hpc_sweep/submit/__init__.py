"""Submitting: queries (the live queue, limits, room under the cap), planning (which configs, in which chunks),
scripts (job scripts from the Jinja templates), chunks (the run configs, map and script of one submission),
intents (the submission protocol's records: intent, unknown, submitted, refused, abandoned; lookups by name,
reconciliation, adoption of orphans), submitting (the ``submit`` command: intent -> send -> record), resubmit and
cancel.

Room 8: may import common, schedulers, state, programs, sweep, session and local.
"""
