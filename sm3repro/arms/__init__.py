"""Experiment arms beyond one run: lr selection and the memory arm."""
