"""Stage 1: load, detect format, validate, split, chat templates, tokenise + label masking."""
