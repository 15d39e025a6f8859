"""`python -m bench`: the command line (bench/cli.py)."""
import importlib
import os
import sys

if getattr(sys.modules.get("bench"), "__file__", None) is None:
    # `python -m` put the working directory first on sys.path, and a folder named bench/ there (no __init__.py)
    # was taken for this package: import the installed one instead (its __init__ pins the CPU instruction set).
    cwd, path = os.getcwd(), list(sys.path)
    sys.path[:] = [p for p in path if os.path.abspath(p or ".") != cwd]
    del sys.modules["bench"]
    importlib.import_module("bench")
    sys.path[:] = path

from bench.cli import main  # noqa: E402

sys.exit(main())
