"""An example paretobench plugin (docs/add-a-method.md, docs/add-a-suite.md).

Its entries reach the harness only through the entry points in its pyproject.toml:

- method `ties_grid` (pb_example_plugin/ties.py): TIES-merging of preference-weighted task vectors on a grid;
- suite `toy-anisotropic` (pb_example_plugin/anisotropic.py): axis-aligned quadratics, closed-form front;
- indicator `spacing` (pb_example_plugin/spacing.py): Schott's spacing of the non-dominated points.

Nothing here imports at package import time, so listing the entries (`python -m bench ls`) stays cheap.
"""
__version__ = "0.1.0"
