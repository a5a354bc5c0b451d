"""The ladder study: a family of small Llamas that is the size axis of the other studies."""
