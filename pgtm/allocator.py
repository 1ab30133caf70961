"""Old home of the malloc tuning; process tuning is the application's business, so it lives in
:mod:`pgtm.cli.allocator` now. Kept for one release."""

from pgtm.cli.allocator import ENVIRONMENT_SWITCH, TRIM_THRESHOLD, keep_freed_memory

__all__ = ["ENVIRONMENT_SWITCH", "TRIM_THRESHOLD", "keep_freed_memory"]
