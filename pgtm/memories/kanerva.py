r"""Kanerva-style probabilistic memory (Wu et al., 2018, "The Kanerva Machine") as a GTM memory.

The memory is itself a random variable: a matrix :math:`M \in \mathbb{R}^{K \times C}` of
:math:`K` slots (rows) of code size :math:`C` with a matrix-normal distribution
:math:`M \sim \mathcal{MN}(R, U, I)`, mean :math:`R` ``[K, C]``, row covariance :math:`U`
``[K, K]`` and identity column covariance. Pyro has no matrix normal, but with column covariance
:math:`I` the :math:`C` columns of :math:`M` are independent :math:`\mathcal{N}(R_{:, j}, U)`, so

.. math::

    M^\top \sim \mathcal{N}(R^\top, U) \text{ row by row:}\quad
    \texttt{MultivariateNormal(loc=}R^\top \texttt{ [C, K], scale\_tril=chol(}U
    \texttt{)).to\_event(1)}

and the Pyro site ``"memory"`` (:data:`SITE`) holds :math:`M^\top`, value ``[*batch, C, K]``,
batch shape ``[*particles, B, 1]`` inside the ``"sequences"`` plate like the ``z_t`` sites (it
has no time index: evaluation reports its KL separately, see below).

**Operations** (all batched over leading dimensions, no Python loop over the batch):

* *addressing* (:func:`least_squares_address`): the address of a key :math:`k` ``[C]`` is the
  ridge-regression solution :math:`w = \arg\min_w \lVert k - w^\top M \rVert^2 +
  \lambda \lVert w \rVert^2`, i.e. :math:`(M M^\top + \lambda I) w = M k` (a batched Cholesky
  solve);
* *reading* (:func:`read`): :math:`w^\top M` ``[C]``;
* *writing* (:func:`bayes_update`, :func:`bayes_posterior`): the exact Bayesian (Kalman) update of
  :math:`(R, U)` given codes :math:`Z` ``[T, C]`` observed through :math:`Z = W M + \epsilon`,
  addresses :math:`W` ``[T, K]``, :math:`\epsilon_{tj} \sim \mathcal{N}(0, \sigma^2)`:

  .. math::

      U = (U_0^{-1} + W^\top W / \sigma^2)^{-1}, \qquad
      R = U (U_0^{-1} R_0 + W^\top Z / \sigma^2),

  computed one code at a time by the rank-one form :math:`\Delta = z - R^\top w`,
  :math:`\sigma_z = w^\top U w + \sigma^2`, :math:`c = U w`, :math:`R \leftarrow R + c
  \Delta^\top / \sigma_z`, :math:`U \leftarrow U - c c^\top / \sigma_z` (then symmetrised; it
  stays positive definite since :math:`\sigma_z > w^\top U w`). A test checks it against the
  closed form.

**Design in the GTM** (``models/gtm.py`` calls the two latent-state hooks of
:class:`~pgtm.memories.base.Memory`):

* *model* (:meth:`KanervaMemory.prior_initial_state`): at the start of each sequence
  :math:`M \sim p(M) = \mathcal{MN}(R_0, U_0, I)` with a **learned prior**: :math:`R_0` a free
  ``[K, C]`` parameter, :math:`U_0 = \mathrm{diag}(\mathrm{softplus}(\rho))` (slots a priori
  independent, always positive definite and cheap; the posterior :math:`U` is a full matrix).
* *every step* (:meth:`KanervaMemory.forward`): the key :math:`k_t = W_k h_t + b_k` is computed
  from the controller output, addressed by least squares against the sampled :math:`M` and the
  read :math:`\Psi_t = w_t^\top M` ``[C]`` conditions prior, posterior and decoder of
  :math:`z_t` exactly like the reads of the other memories. :math:`M` is not changed during the
  sequence (the latent :math:`z_{t-1}` is not written: in the generative model all the memory's
  information is in the sampled :math:`M`).
* *guide* (:meth:`KanervaMemory.posterior_initial_state`):
  :math:`q(M \mid x_{0:T}) = \mathcal{MN}(R_T, U_T, I)`, the exact Bayesian posterior of the
  prior :math:`(R_0, U_0)` given *write codes* :math:`y_t = W_y e_t + b_y` computed
  deterministically from the encoder features :math:`e_t` of the sequence's frames (masked steps
  are not written). Each code's write address is the least-squares address of :math:`y_t`
  against the *current* posterior mean :math:`R_{t-1}` (the code is stored where it already
  fits best, as the Kanerva Machine fits a code's address to the memory; the rank-one updates
  are applied in time order). :math:`M` is sampled from it, then the recurrence runs with that
  :math:`M`. **q(M) conditions on the whole sequence** (as in the Kanerva Machine): the reads
  at step :math:`t` of the guide depend on frames after :math:`t` through :math:`M`. This is a
  valid variational family: the ELBO is :math:`\mathbb{E}_q[\log p(x, z, M) - \log q(z, M)]`,
  with :math:`q(z_t \mid \cdot)` conditioned on :math:`M` through the reads.
* The KL of the memory is **not hand-written**: the ``"memory"`` site appears in model and guide,
  so ``Trace_ELBO`` (:math:`\log p(M) - \log q(M)`), ``TraceMeanField_ELBO`` (analytic KL of the
  two ``Independent(MultivariateNormal)``) and the IWAE evaluation include it.
  :func:`~pgtm.inference.evaluate.evaluate` reports it separately as ``global_kl`` (the KL of
  sites without a time index); the per-step ``kl`` lists are those of the :math:`z_t` alone.
* With ``generate()`` the memory is sampled from the prior (free generation) or from
  :math:`q(M \mid x_{0:n})` given the observed frames.
* The deterministic :meth:`KanervaMemory.initial_state` is the prior mean :math:`M = R_0` (used
  when the memory is run outside a GTM, e.g. by the conformance tests).

The memory returns no read weights (addresses are signed, not the non-negative weights that the
plots and read-head statistics expect), gates or penalty.

**Defaults.** :math:`K = 32` slots (the default of the content-addressed memories, which get
:math:`\max(32, T)`; :math:`K` does not need to grow with :math:`T`, as writes accumulate) and
code size :math:`C = 160`, which is also the read size: 160 is the Introspective memory's
default read size (5 heads of latent size 32), so the controller, prior, posterior and decoder
of a GTM are unchanged and the parameter counts comparable, as for the other memories. It must
exceed :math:`K`: the read :math:`w^\top M = M^\top (M M^\top + \lambda I)^{-1} M k` is the
(ridge) projection of the key onto the row space of :math:`M`; with :math:`K \ge C` that row
space is generically all of :math:`\mathbb{R}^C` and the read would merely shrink the key,
whereas with :math:`K < C` it is confined to the :math:`K`-dimensional span of what was stored
(a code size equal to the latent size, 32, would leave no such room with 32 slots).
:math:`\lambda = 1` (``address_regulariser``) and :math:`\sigma^2 = 1` (``write_noise``):
:math:`R_0` is initialised :math:`\mathcal{N}(0, 1)` and :math:`U_0 = I`, so the eigenvalues of
:math:`R_0 R_0^\top` start at about 55 to 320 (those of :math:`M M^\top`, with the prior's
noise, at about 100 to 700; :math:`K = 32, C = 160`) and :math:`\lambda = 1` is a mild
regulariser that keeps the solves well conditioned (also for a memory that has collapsed to low
rank) without flattening the addresses; a code with entries of size one then has an address
with :math:`w^\top U_0 w \approx 0.25`, so with :math:`\sigma^2 = 1` one write moves the
memory by a fifth of the way to the code along its address: a sequence's codes are stored
clearly without a single one overwriting its slots (the code layer learns the scale of the
codes, and with it the effective write strength). The memory has :math:`K C + K` prior
parameters (5,152) plus the key layer and the code layer (:math:`256 \cdot 160 + 160` each),
87,392 in all, and ``build_gtm("kanerva", sequence_length=15)`` has 1,999,713 parameters, 3.5%
more than the Introspective GTM (1,932,881).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pgtm.checks import number
from pgtm.memories.base import Memory, MemoryOutput, require_positive_sizes
from pgtm.shapes import broadcast_leading
from pgtm.unrolled_linear import UnrolledLinear

#: name of the Pyro site of the memory (its value is :math:`M^\top`, ``[*batch, C, K]``)
SITE = "memory"


class KanervaState(NamedTuple):
    """:ivar memory: ``[*batch, num_slots, code_size]``, the (sampled) memory :math:`M`."""

    memory: torch.Tensor


def symmetrise(matrix: torch.Tensor) -> torch.Tensor:
    """:math:`(A + A^\\top) / 2` of ``[*batch, K, K]``."""
    return (matrix + matrix.transpose(-1, -2)) / 2


def least_squares_address(
    memory: torch.Tensor, key: torch.Tensor, regulariser: float
) -> torch.Tensor:
    r"""The address :math:`w = \arg\min_w \lVert k - w^\top M \rVert^2 + \lambda \lVert w
    \rVert^2`, i.e. the solution of :math:`(M M^\top + \lambda I) w = M k`.

    :param memory: :math:`M`, ``[*batch, K, C]``.
    :param key: :math:`k`, ``[*batch, C]``.
    :param regulariser: :math:`\lambda > 0`.
    :returns: ``[*batch, K]`` (leading dims broadcast).
    """
    eye = torch.eye(memory.shape[-2], device=memory.device, dtype=memory.dtype)
    gram = memory @ memory.transpose(-1, -2) + regulariser * eye  # [*, K, K], SPD
    rhs = memory @ key.unsqueeze(-1)  # [*, K, 1]
    gram, rhs = broadcast_leading(gram, rhs, event_dims=2)
    return torch.cholesky_solve(rhs, torch.linalg.cholesky(gram)).squeeze(-1)


def read(memory: torch.Tensor, address: torch.Tensor) -> torch.Tensor:
    """:math:`w^\\top M`.

    :param memory: ``[*batch, K, C]``.
    :param address: ``[*batch, K]``.
    :returns: ``[*batch, C]`` (leading dims broadcast).
    """
    return (address.unsqueeze(-2) @ memory).squeeze(-2)


def bayes_update(
    mean: torch.Tensor,
    covariance: torch.Tensor,
    address: torch.Tensor,
    code: torch.Tensor,
    noise_variance: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One exact Bayesian (rank-one Kalman) write of ``code`` at ``address``.

    With :math:`\Delta = z - R^\top w`, :math:`\sigma_z = w^\top U w + \sigma^2` and
    :math:`c = U w`: :math:`R \leftarrow R + c \Delta^\top / \sigma_z`,
    :math:`U \leftarrow U - c c^\top / \sigma_z` (symmetrised). A zero address leaves
    :math:`(R, U)` unchanged.

    :param mean: :math:`R`, ``[*batch, K, C]``.
    :param covariance: :math:`U`, ``[*batch, K, K]``, symmetric positive definite.
    :param address: :math:`w`, ``[*batch, K]``.
    :param code: :math:`z`, ``[*batch, C]``.
    :param noise_variance: :math:`\sigma^2 > 0`.
    :returns: ``(mean [*batch, K, C], covariance [*batch, K, K])`` (leading dims broadcast).
    """
    delta = code - read(mean, address)  # [*, C]
    gain = (covariance @ address.unsqueeze(-1)).squeeze(-1)  # c = U w, [*, K]
    sigma = (address * gain).sum(-1) + noise_variance  # [*]
    scaled = (gain / sigma.unsqueeze(-1)).unsqueeze(-1)  # c / sigma_z, [*, K, 1]
    mean = mean + scaled * delta.unsqueeze(-2)
    covariance = symmetrise(covariance - scaled * gain.unsqueeze(-2))
    return mean, covariance


def bayes_posterior(
    prior_mean: torch.Tensor,
    prior_covariance: torch.Tensor,
    addresses: torch.Tensor,
    codes: torch.Tensor,
    noise_variance: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The closed-form posterior of :math:`M \sim \mathcal{MN}(R_0, U_0, I)` given
    :math:`Z = W M + \epsilon`: :math:`U = (U_0^{-1} + W^\top W / \sigma^2)^{-1}`,
    :math:`R = U (U_0^{-1} R_0 + W^\top Z / \sigma^2)` (for fixed addresses; the sequential
    :func:`bayes_update` gives the same result).

    :param prior_mean: :math:`R_0`, ``[*batch, K, C]``.
    :param prior_covariance: :math:`U_0`, ``[*batch, K, K]``.
    :param addresses: :math:`W`, ``[*batch, T, K]``.
    :param codes: :math:`Z`, ``[*batch, T, C]``.
    :param noise_variance: :math:`\sigma^2 > 0`.
    :returns: ``(mean [*batch, K, C], covariance [*batch, K, K])``.
    """
    prior_factor = torch.linalg.cholesky(prior_covariance)
    eye = torch.eye(prior_covariance.shape[-1], device=codes.device, dtype=codes.dtype)
    prior_precision = torch.cholesky_solve(eye.expand_as(prior_factor), prior_factor)
    w_t = addresses.transpose(-1, -2)
    precision = symmetrise(prior_precision + w_t @ addresses / noise_variance)
    information = torch.cholesky_solve(prior_mean, prior_factor) + w_t @ codes / noise_variance
    factor = torch.linalg.cholesky(precision)
    covariance = symmetrise(torch.cholesky_solve(eye.expand_as(factor), factor))
    return torch.cholesky_solve(information, factor), covariance


def matrix_normal(mean: torch.Tensor, covariance: torch.Tensor) -> dist.Distribution:
    r""":math:`\mathcal{MN}(R, U, I)` as a distribution of :math:`M^\top`: the :math:`C`
    independent columns :math:`\mathcal{N}(R_{:, j}, U)`.

    :param mean: :math:`R`, ``[*batch, K, C]``.
    :param covariance: :math:`U`, ``[*batch, K, K]``.
    :returns: ``Independent(MultivariateNormal)`` with batch shape ``batch`` and event shape
        ``[C, K]``.
    """
    scale_tril = torch.linalg.cholesky(covariance).unsqueeze(-3)  # [*, 1, K, K]
    # a Cholesky factor by construction: validating it would check C broadcast copies of it
    loc = mean.transpose(-1, -2)
    return dist.MultivariateNormal(loc, scale_tril=scale_tril, validate_args=False).to_event(1)


class KanervaMemory(Memory):
    """A matrix-normal memory :math:`M \\sim \\mathcal{MN}(R, U, I)` sampled once per sequence
    (a Pyro latent site), written by exact Bayesian updates in the guide and read by
    least-squares addressing.

    :param latent_size: :math:`Z` (the memory does not store latents; checked only).
    :param controller_size: size of :math:`h_t`.
    :param feature_size: size of the encoder features the guide writes (``build_gtm`` passes
        it); ``None`` builds a memory that can be run and sampled from the prior only.
    :param num_slots: :math:`K` (default 32).
    :param code_size: :math:`C`, also the read size (default 160).
    :param address_regulariser: :math:`\\lambda > 0` of the least-squares addresses (default 1).
    :param write_noise: :math:`\\sigma^2 > 0`, variance of the write noise (default 1).
    """

    def __init__(
        self,
        latent_size: int,
        controller_size: int,
        *,
        feature_size: int | None = None,
        num_slots: int = 32,
        code_size: int = 160,
        address_regulariser: float = 1.0,
        write_noise: float = 1.0,
    ):
        super().__init__()
        require_positive_sizes(
            latent_size=latent_size,
            controller_size=controller_size,
            num_slots=num_slots,
            code_size=code_size,
        )
        if feature_size is not None:
            require_positive_sizes(feature_size=feature_size)
        number("address_regulariser", address_regulariser, 0, low_open=True)
        number("write_noise", write_noise, 0, low_open=True)
        self.latent_size = int(latent_size)
        self.controller_size = int(controller_size)
        self.feature_size = None if feature_size is None else int(feature_size)
        self.num_slots = int(num_slots)
        self.code_size = int(code_size)
        self.address_regulariser = float(address_regulariser)
        self.write_noise = float(write_noise)
        self.read_size = self.code_size
        self.prior_mean = nn.Parameter(torch.randn(self.num_slots, self.code_size))  # R_0
        # U_0 = diag(softplus(rho)), initialised to the identity
        self.prior_variance_raw = nn.Parameter(
            torch.full((self.num_slots,), math.log(math.expm1(1.0)))
        )
        self.key = UnrolledLinear(controller_size, self.code_size)
        self.code = None if feature_size is None else UnrolledLinear(feature_size, self.code_size)

    def extra_repr(self) -> str:
        return (
            f"num_slots={self.num_slots}, code_size={self.code_size}, "
            f"address_regulariser={self.address_regulariser}, write_noise={self.write_noise}"
        )

    # ------------------------------------------------------------------ prior
    def prior(self, batch_shape=(), device=None, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned prior :math:`(R_0, U_0)`, expanded to ``batch_shape``.

        :returns: ``(mean [*batch, K, C], covariance [*batch, K, K])``.
        """
        mean = self.prior_mean.to(device=device, dtype=dtype)
        variance = F.softplus(self.prior_variance_raw).to(device=device, dtype=dtype)
        covariance = torch.diag_embed(variance)
        batch_shape = tuple(batch_shape)
        return (
            mean.expand(batch_shape + mean.shape),
            covariance.expand(batch_shape + covariance.shape),
        )

    def memory_matrix(self, state: KanervaState) -> torch.Tensor:
        return state.memory

    def initial_state(self, batch_shape, device=None, dtype=None) -> KanervaState:
        """The prior mean :math:`M = R_0` with leading shape ``batch_shape`` (deterministic; a
        GTM samples :math:`M` with the two hooks below instead)."""
        return KanervaState(self.prior(batch_shape, device, dtype)[0])

    # ------------------------------------------------------------------ the latent M
    def prior_initial_state(self, batch_shape, device=None, dtype=None) -> KanervaState:
        """Sample :math:`M \\sim p(M)` at the Pyro site ``"memory"`` (call it inside the
        ``"sequences"`` plate with ``batch_shape = (B, 1)``)."""
        mean, covariance = self.prior(batch_shape, device, dtype)
        value = pyro.sample(SITE, matrix_normal(mean, covariance))  # M^T, [*, C, K]
        return KanervaState(value.transpose(-1, -2))

    def posterior(
        self, features: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The parameters :math:`(R_T, U_T)` of :math:`q(M \\mid x)`: the codes of the
        features written one at a time (in time order) by :func:`bayes_update`, each at its
        least-squares address against the current posterior mean; masked steps are skipped.

        :param features: ``[*batch, T, feature_size]`` encoder features of the frames.
        :param mask: ``[*batch, T]`` bool (True: write the step) or ``None`` (all).
        :returns: ``(mean [*batch, K, C], covariance [*batch, K, K])``.
        """
        if self.code is None:
            raise ValueError(
                "this KanervaMemory was built without feature_size: it cannot "
                "compute q(M | x) (build it with build_gtm or pass feature_size)"
            )
        if features.dim() < 2 or features.shape[-1] != self.feature_size:
            raise ValueError(
                f"features must have shape [*batch, T, {self.feature_size}], "
                f"got {list(features.shape)}"
            )
        if mask is not None and (
            mask.dtype != torch.bool or tuple(mask.shape) != tuple(features.shape[:-1])
        ):
            raise ValueError(
                f"mask must be a bool tensor of shape [*batch, T] = "
                f"{list(features.shape[:-1])}, got {mask.dtype} {list(mask.shape)}"
            )
        codes = self.code(features)  # [*, T, C]
        mean, covariance = self.prior(codes.shape[:-2], codes.device, codes.dtype)
        steps = codes.unbind(-2)
        masks = [None] * len(steps) if mask is None else mask.unbind(-1)
        for code, write in zip(steps, masks, strict=True):
            address = least_squares_address(mean, code, self.address_regulariser)
            if write is not None:  # a zero address writes nothing (exactly)
                address = address * write.unsqueeze(-1).to(address.dtype)
            mean, covariance = bayes_update(mean, covariance, address, code, self.write_noise)
        return mean, covariance

    def posterior_initial_state(self, features, mask=None) -> KanervaState:
        """Sample :math:`M \\sim q(M \\mid x)` (see :meth:`posterior`) at the Pyro site
        ``"memory"``; the state's batch shape is that of ``features`` without its last two
        dims."""
        mean, covariance = self.posterior(features, mask)
        value = pyro.sample(SITE, matrix_normal(mean, covariance))
        return KanervaState(value.transpose(-1, -2))

    # ------------------------------------------------------------------ one step
    def _check(self, state, controller_output: torch.Tensor, latent: torch.Tensor) -> None:
        self.check_step_inputs(controller_output, latent)
        memory = getattr(state, "memory", None)
        event = (self.num_slots, self.code_size)
        if not isinstance(state, KanervaState) or memory.dim() < 2 or memory.shape[-2:] != event:
            got = list(memory.shape) if torch.is_tensor(memory) else type(state).__name__
            raise ValueError(
                f"state must be a KanervaState with memory [*batch, {event[0]}, {event[1]}], "
                f"got {got}"
            )

    def forward(self, state: KanervaState, controller_output, latent) -> MemoryOutput:
        """Read :math:`w_t^\\top M` with the least-squares address of the key
        :math:`k_t = W_k h_t + b_k`; the memory itself does not change.

        :param state: :class:`KanervaState`.
        :param controller_output: :math:`h_t`, ``[*batch, controller_size]``.
        :param latent: :math:`z_{t-1}`, ``[*batch, latent_size]`` (not written; its leading
            dims are broadcast into the outputs).
        :returns: :class:`MemoryOutput` with ``read [*batch, code_size]`` and the state; no
            weights, gates or penalty.
        """
        self._check(state, controller_output, latent)
        key = self.key(controller_output)
        address = least_squares_address(state.memory, key, self.address_regulariser)
        out, memory, _ = broadcast_leading(
            read(state.memory, address), state.memory, latent, event_dims=(1, 2, 1)
        )
        return MemoryOutput(out, KanervaState(memory))
