"""What every method is: a small typed class with one verb.

    front = SomeMethod(**config).approximate_front(suite, evaluator=evaluator, seed=0)

The constructor (a dataclass) is the config schema: its fields' defaults and trailing comments are
the options' defaults and documentation (`bench ls name=<method>`). `approximate_front` returns a
`bench.core.front.Front`. Methods never loop over evaluation data: every candidate is scored through
`evaluator.evaluate(params, split, key=recipe)`, which journals it, so a resumed run gets it back
for free. A method that trains saves its state through `checkpoints` (bench.runtime.rundir.Checkpoints:
`due(step)`, `save(name, state)`, `load(name)`) and, when resumed, continues from it.
"""
from __future__ import annotations

from typing import ClassVar

from bench.api import Front

CHECK_EVERY = 10       # training steps between checks for a non-finite loss (each check waits for the device)
EXPLODED = 100.0       # a training run whose loss ends above this × where it started diverged


class Method:
    paper: ClassVar[str] = ""   # the paper it follows, printed as a leaderboard footnote
    url: ClassVar[str] = ""
    # what a leaderboard matches its cost in (bench/reports/leaderboard.py): "evaluations" (a search), "steps_per_ray"
    # (one model trained per preference ray), "steps" (one run for every preference); "": none declared
    budget: ClassVar[str] = ""

    @classmethod
    def n_rays(cls, T: int, options: dict) -> int:
        """Preference rays trained at T with `options` (the constructor's, defaults filled in): a
        `steps_per_ray` method's leaderboard divides its matched training steps by this."""
        raise NotImplementedError(f"{cls.__name__} does not say how many rays it trains")

    @classmethod
    def matched(cls, options: dict, T: int, evaluations: int) -> dict:
        """`options` (the spec's, over the defaults) changed to spend about `evaluations` model
        evaluations at T: a search method's leaderboard budget at matched cost. Default: as given."""
        return dict(options)

    def approximate_front(self, suite, *, evaluator, seed: int, checkpoints=None) -> Front:  # pragma: no cover
        raise NotImplementedError
