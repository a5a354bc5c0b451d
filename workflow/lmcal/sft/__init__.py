"""The label-smoothing SFT study (Huang, Lu & Zeng 2025): fine-tuning, the sweep, the V/D study, summary, figures."""
