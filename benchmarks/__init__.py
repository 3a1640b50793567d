"""diffsci.benchmarks: the demo, benchmarks against baselines, speed measurements.

``diffsci bench protein|weather|speed``; ``python -m diffsci.benchmarks.demo``.
"""

__all__: list[str] = []
