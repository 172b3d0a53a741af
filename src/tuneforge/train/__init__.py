"""Stages 3-4: the training loop, one module per objective, shared callbacks."""
