"""The benchmark suite behind ``benchmarks/run.py``: measure, judge, render, persist.

``model`` is the typed result they share; ``measure`` and ``sections`` run loads,
``judge`` decides the targets, ``render`` prints, ``persist`` writes and reads the JSON;
``stable`` (instruction counts), ``compare`` (another revision) and ``viewer`` are
sections of their own.
"""
