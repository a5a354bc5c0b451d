"""The README's results section, generated from the study summaries' claim records (``lmcal.core.claims``)."""
