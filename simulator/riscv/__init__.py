"""The machine: what the hardware does, the ground truth the oracle trusts."""
