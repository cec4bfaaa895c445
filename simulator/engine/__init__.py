"""What makes p2msim a race detector: the conductor, the oracle, bugs, logs, wiring."""
