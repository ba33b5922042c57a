"""Meta-Dropout benchmark suite: a fast second-order MAML core with pluggable regularizers."""
