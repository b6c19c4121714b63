"""Benchmarks of Lookalike against faiss, hnswlib, usearch, chromadb and lancedb (see README.md).

A package so that its modules import as ``bench.datasets`` / ``bench.peers``: a top-level module
named ``datasets`` would be taken for Hugging Face ``datasets`` by lancedb.
"""
