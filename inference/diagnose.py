r"""Where a batch's negative ELBO comes from: the terms a loss explosion is traced to.

:func:`loss_terms` scores one guide draw on a batch, as ``Trace_ELBO`` does, and splits

.. math:: -\mathrm{ELBO} = -\log p(x \mid z) + \sum_t [\log q(z_t) - \log p(z_t)]
    + \mathrm{penalty}

into its parts, with the latent site whose KL term is largest and the smallest scales of the
prior and the posterior (a Gaussian whose scale reaches its floor turns a small error in the
latent into a huge :math:`-\log p(z_t)`). Training records them with every divergence
(``rollbacks.json``, the warning and the error).
"""

from __future__ import annotations

import pyro.poutine as poutine
import torch

__all__ = ["describe_terms", "loss_terms"]


def _smallest_scale(fn) -> float | None:
    """The smallest ``scale`` of a location-scale distribution (through ``Independent``)."""
    base = getattr(fn, "base_dist", fn)
    scale = getattr(base, "scale", None)
    return float(scale.min()) if torch.is_tensor(scale) else None


def _smallest(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


@torch.no_grad()
def loss_terms(gtm, x: torch.Tensor, c: torch.Tensor | None = None,
               mask: torch.Tensor | None = None) -> dict[str, float | str | None]:
    """The parts of one draw of the negative ELBO of ``gtm`` on a batch (summed over it).

    :param gtm: a :class:`~pgtm.models.GTM`.
    :param x: frames ``[B, T, *frame_shape]``.
    :param c: context ``[B, T, action_size]`` or ``None``.
    :param mask: ``[B, T]`` bool or ``None``.
    :returns: ``reconstruction`` (:math:`-\\log p(x \\mid z)`, every observed site but the
        penalties), ``kl`` (:math:`\\sum_t \\log q - \\log p` at the draw), ``penalty``,
        ``largest_kl_site`` and ``largest_kl`` (the latent site with the largest KL term, e.g.
        ``"z_7"``, and that term), ``prior_scale_min`` and ``posterior_scale_min`` (``None``
        for distributions without a ``scale``), and ``latent_abs_max``; Python numbers.
    """
    guide = poutine.trace(gtm.guide).get_trace(x, c, mask)
    model = poutine.trace(poutine.replay(gtm.model, trace=guide)).get_trace(x, c, mask)
    guide.compute_log_prob()
    model.compute_log_prob()
    kl: dict[str, float] = {}
    prior_scales, posterior_scales = [], []
    reconstruction, penalty, latent_max = 0.0, 0.0, 0.0
    for name, site in model.nodes.items():
        if site["type"] != "sample" or type(site["fn"]).__name__ == "_Subsample":
            continue  # a plate's subsample site is no latent variable
        if name.startswith("penalty"):
            penalty -= float(site["log_prob"].sum())
        elif site["is_observed"]:
            reconstruction -= float(site["log_prob"].sum())
        elif name in guide.nodes:
            kl[name] = float((guide.nodes[name]["log_prob"] - site["log_prob"]).sum())
            prior_scales.append(_smallest_scale(site["fn"]))
            posterior_scales.append(_smallest_scale(guide.nodes[name]["fn"]))
            latent_max = max(latent_max, float(site["value"].abs().max()))
    largest = max(kl, key=kl.__getitem__) if kl else None
    return {
        "reconstruction": reconstruction,
        "kl": sum(kl.values()),
        "penalty": penalty,
        "largest_kl_site": largest,
        "largest_kl": None if largest is None else kl[largest],
        "prior_scale_min": _smallest(prior_scales),
        "posterior_scale_min": _smallest(posterior_scales),
        "latent_abs_max": latent_max,
    }


def describe_terms(terms: dict) -> str:
    """One line of :func:`loss_terms`' result, e.g. for a divergence message."""
    if "error" in terms:
        return f"the terms could not be computed ({terms['error']})"

    def number(value):
        return "n/a" if value is None else f"{value:.4g}"

    return (f"-log p(x|z) {number(terms['reconstruction'])}, KL {number(terms['kl'])} "
            f"(largest: {terms['largest_kl_site']} {number(terms['largest_kl'])}), penalty "
            f"{number(terms['penalty'])}; smallest prior scale "
            f"{number(terms['prior_scale_min'])}, smallest posterior scale "
            f"{number(terms['posterior_scale_min'])}, largest |z| "
            f"{number(terms['latent_abs_max'])}")
