"""Figures 4-7 and learning curves, drawn from finished cells and their kept checkpoints."""
