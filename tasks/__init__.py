"""Task suites; each module registers itself in bench.registry.SUITES (explicit imports)."""
from tasks import toy  # noqa: F401
from tasks import tiny_clip  # noqa: F401
from tasks import tiny_gpt2  # noqa: F401
from tasks import clip  # noqa: F401
from tasks import gpt2_glue  # noqa: F401
