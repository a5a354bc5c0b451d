"""The calibration study: multiple-choice scoring, calibration metrics (ECE, RMS-CE, Brier), reliability figures."""
