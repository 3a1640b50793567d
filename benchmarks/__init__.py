"""diffsci.benchmarks"""
