"""``python -m hpc_sweep``: the same command line as ``hpc-sweep``."""

from hpc_sweep.cli import main

if __name__ == "__main__":
    main()
