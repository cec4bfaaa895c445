"""Hunting races: sweeps of seeds, the detection matrix, shrinking and replaying a failure, comparing a
variant against a profile, the speed benchmark.  Built on simulator.engine; the command line drives it."""
