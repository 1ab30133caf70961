"""Define a new prior in a few lines and train an Introspective GTM with it.

A prior is any ``Prior`` subclass: it receives the context ``[Psi_{t-1}, h_t]`` and returns a
distribution over ``z_t`` with event shape ``[latent_size]``. Here: a learned Laplace prior.

    python examples/custom_prior.py --steps 200 --out runs/laplace_prior
"""

from __future__ import annotations

import argparse

import pyro.distributions as dist
from torch import nn

from pgtm.experiment import run_experiment
from pgtm.inference.train import TrainConfig
from pgtm.models import Prior
from pgtm.tasks import make_task


class LaplacePrior(Prior):
    """p(z_t | Psi, h) = Laplace(mu(Psi, h), b(Psi, h)) per latent dimension."""

    def __init__(self, context_size, latent_size):
        super().__init__(context_size, latent_size)
        self.net = nn.Linear(context_size, 2 * latent_size)

    def forward(self, context):
        loc, raw_scale = self.net(context).chunk(2, dim=-1)
        return dist.Laplace(loc, nn.functional.softplus(raw_scale) + 1e-3).to_event(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train a GTM with a user-defined prior.")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default="runs/laplace_prior")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    task = make_task("perfect-recall", data_dir=args.data_dir)
    config = TrainConfig(steps=args.steps, batch_size=16, eval_every=max(1, args.steps // 4),
                         out_dir=args.out)
    summary = run_experiment("introspective", task, config, model_options={"prior": LaplacePrior},
                             eval_sequences=32, iwae_particles=20)
    print({k: summary[k] for k in ("recall_kl", "prerecall_kl", "elbo", "iwae", "parameters")})


if __name__ == "__main__":
    main()
