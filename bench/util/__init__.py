"""Small shared utilities: errors, notices, atomic writes, paths, devices, failures (no project imports)."""
