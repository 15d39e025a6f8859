"""The core: what a run is made of and how it is scored (registry, front, record, indicators,
hypervolume, evaluator, merge, rays). It imports nothing from the runtime or the reports.
"""
