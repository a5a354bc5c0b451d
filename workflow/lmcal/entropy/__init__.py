"""The entropy-calibration study (Cao, Valiant & Liang 2025): protocol, sampling/scoring jobs, analysis, theory, figures."""
