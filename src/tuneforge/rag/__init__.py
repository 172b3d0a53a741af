"""Retrieval-augmented generation: chunk documents, index them (FAISS + SQLite), retrieve
top-k passages with citations, and compare fine-tuning with RAG on a run's test split."""
