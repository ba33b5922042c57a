"""The CPU kernels (kernels.py) and the one seam that picks the stock or the fast op set for a device and plan
(dispatch.py)."""
