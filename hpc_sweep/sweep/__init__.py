"""The sweep definition and its configs: sweepfile (sweep.toml, checked key by key), expand (grid, zip, random and
explicit parameter sets), device (the ``gpu*8:1-4,7`` grammar), generate (one config file per parameter set,
numbered for good), init (a new sweep folder and its commented sweep.toml), sites (site profiles and which one
this host is).

Room 5: may import common, schedulers, state and programs.
"""
