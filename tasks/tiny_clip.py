"""(being written: see the issue that adds it)."""
