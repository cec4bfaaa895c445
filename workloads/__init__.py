"""Built-in workloads: one scenario per file, runnable by name or by path."""
