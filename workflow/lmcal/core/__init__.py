"""Shared foundation: config validation, atomic I/O and JSON cleaning, MLflow tracking, path templates."""
