"""Retrieval quality and ingest throughput of the collection types, with baselines measured in the same run.

    .venv/bin/python bench/quality/run.py [--quick] [--out bench/RESULTS.md]

Modules: ``datasets`` (photos, augmented views, Fashion-MNIST, distractors, colour images),
``metrics`` (AP, P@k, recall@1, duplicate precision/recall), ``baselines`` (raw pixels, colour
histogram), ``suites`` (one function per table group), ``report`` (Markdown), ``run`` (the command).
"""
