"""The one place for state: an SQLite database under .hpc_sweep/, plus the file lock writers hold.

Modules: store.py (the connection, explicit transactions, typed queries, backup), lock.py (the writers' lock),
schema.py (tables, added columns, older databases), health.py (ok, empty, corrupt or busy; recovery from the last
good copy), states.py (state names and their groups), rows.py (the typed rows the store returns).

Room 3: may import only hpc_sweep.common.

Tables
- meta: schema version, sweep name, the job-name prefix (recorded once at init).
- configs: one row per generated config: its parameters, file, digest, resource shape, current state/attempt.
- submissions: one row per scheduler submission (an array chunk). Written as "intent" BEFORE the submit
  command runs, so a crash between submitting and recording is found again by the job name (statuses: see
  :mod:`hpc_sweep.state.states`; the protocol: :mod:`hpc_sweep.submit.intents`).
- attempts: one row per (config, attempt): where it ran and how it ended (and, while it is pending for a reason
  waiting cannot clear, the fix: ``stuck``).
- progress: what the log parser knows of the current attempt (cursor, parser state, latest numbers).
- epochs: the loss curve, per config and attempt (WITHOUT ROWID: stored once, in key order; older sweeps keep
  their rowid table, which reads the same).
- events: what happened and why (forced regenerations, resumes, refusals).

Who writes: only a store opened with the writers' lock held (a write session, :mod:`hpc_sweep.session`), and only
inside :meth:`hpc_sweep.state.store.Store.transaction`; both are enforced here. A database another process holds
past the busy timeout is busy, never damaged. Only the lock holder sets a damaged database aside and restores its
last good copy (state.db.bak); when that is damaged too, ``hpc-sweep repair`` (:mod:`hpc_sweep.repair`) rebuilds the
state.
"""
