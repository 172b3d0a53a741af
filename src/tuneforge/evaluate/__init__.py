"""Stage 5: metrics, generation, base-vs-tuned comparison, reports."""
