"""Running cells: the sweep behind run_all.py, one cell, local and Ray backends, estimates, preflight checks."""
