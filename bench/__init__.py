"""paretobench: Pareto-set approximation benchmarks for model merging. See README.md."""
__version__ = "0.1.0"
