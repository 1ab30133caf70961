"""Generative temporal models with memory, as Pyro model/guide pairs."""
