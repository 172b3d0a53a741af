"""Stage 2: base-model sources, loading, and training strategies."""
