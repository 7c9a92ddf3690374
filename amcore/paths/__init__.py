"""Paths: couplings and interpolants that draw samples of q_t between snapshots, in memory or streamed."""
