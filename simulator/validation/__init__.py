"""Validation: the measurement CSV contract, predicting measured kernels, calibration, and the torch
harness (``bench``, which needs the optional torch extra)."""
