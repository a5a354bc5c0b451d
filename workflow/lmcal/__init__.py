"""lmcal: calibration and scaling studies of language models (library behind the Snakemake workflow)."""

__version__ = "0.1.0"
