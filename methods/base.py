"""What every method is: a small typed class with one verb.

    front = SomeMethod(**config).approximate_front(suite, evaluator=evaluator, seed=0)

The constructor (a dataclass) is the config schema: its fields' defaults and trailing comments are
the options' defaults and documentation (`bench ls name=<method>`). `approximate_front` returns a
`bench.front.Front`. Methods never loop over evaluation data: every candidate is scored through
`evaluator.evaluate(params, split, key=recipe)`, which journals it, so a resumed run gets it back
for free. A method that trains saves its state through `checkpoints` (bench.rundir.Checkpoints:
`due(step)`, `save(name, state)`, `load(name)`) and, when resumed, continues from it.
"""
from __future__ import annotations

from typing import ClassVar

from bench.front import Front

CHECK_EVERY = 10       # training steps between checks for a non-finite loss (each check waits for the device)
EXPLODED = 100.0       # a training run whose loss ends above this × where it started diverged


class Method:
    paper: ClassVar[str] = ""   # the paper it follows, printed as a leaderboard footnote
    url: ClassVar[str] = ""

    def approximate_front(self, suite, *, evaluator, seed: int, checkpoints=None) -> Front:  # pragma: no cover
        raise NotImplementedError
