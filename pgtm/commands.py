"""Old home of ``pgtm train`` / ``evaluate`` / ``sample``; they live in :mod:`pgtm.cli` now (one
module per command). Kept for one release."""

from pgtm.cli.train import memory_forcing_from_args, model_options_from_args

__all__ = ["memory_forcing_from_args", "model_options_from_args"]
