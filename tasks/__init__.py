"""Task suites; each module registers itself in bench.registry.SUITES (explicit imports)."""
from tasks import toy  # noqa: F401
