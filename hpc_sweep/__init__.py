"""hpc-sweep: hyperparameter sweeps of ML trainers on Slurm, PBS Pro, Torque and bare GPU boxes."""

__version__ = "0.1.0"
