"""Portico's benchmark harness: ``make bench`` / ``python -m bench`` (see docs/benchmarks.md).

One run starts the ``make run`` stack (:class:`portico_devstack.launcher.Stack`) plus same-run
baselines on loopback, then measures every case of :mod:`bench.cases` with its variants
interleaved (A/B/A/B…) at each concurrency, and writes ``bench/results/<UTC time>.json``.
"""
