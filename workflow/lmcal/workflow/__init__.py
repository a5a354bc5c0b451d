"""Parse-time helpers the rule files call: input functions, params and target lists (torch-free, fast to import)."""
