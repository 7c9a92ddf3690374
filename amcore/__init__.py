"""amcore: learn population dynamics from unpaired time snapshots with Action Matching."""

__version__ = "0.1.0"
