"""Records, rules and errors shared by every layer: no I/O, no imports from above."""
