"""Data sources: documents from offline and hub corpora, instruction (SFT) data, multiple-choice evaluation sets."""
