"""The runtime: running things (the orchestrator, run directories and resume, workers, the config,
interruption, progress, the machine, baseline checks, exports, published references). Imports the core.
"""
