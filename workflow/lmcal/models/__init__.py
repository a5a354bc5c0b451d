"""Models: the local model store (load, cache, weights record), small Llamas built and trained here, tokenizers."""
