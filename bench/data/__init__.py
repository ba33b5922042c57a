"""Datasets as GPU-resident uint8 image banks."""
