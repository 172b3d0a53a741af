"""tuneforge: end-to-end LLM fine-tuning toolkit."""

__version__ = "0.1.0"
