"""Pyro model/guide pairs of generative temporal models (installed as ``pgtm.models``)."""

from pgtm.models.build import (
    MEMORIES,
    NETWORKS,
    build_gtm,
    controller_size_for_budget,
    count_parameters,
)
from pgtm.models.gtm import GTM
from pgtm.models.likelihoods import LIKELIHOODS, Likelihood
from pgtm.models.posteriors import POSTERIORS, Posterior
from pgtm.models.priors import PRIORS, Prior

__all__ = [
    "GTM",
    "LIKELIHOODS",
    "MEMORIES",
    "NETWORKS",
    "POSTERIORS",
    "PRIORS",
    "Likelihood",
    "Posterior",
    "Prior",
    "build_gtm",
    "controller_size_for_budget",
    "count_parameters",
]
