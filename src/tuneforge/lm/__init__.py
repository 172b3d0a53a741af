"""What every stage shares about a language model: chat templates, loading a folder, generation,
the label loss, collators and the sentence embedder. Imports nothing above it (see
docs/architecture.md)."""
