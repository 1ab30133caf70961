r"""The generic generative temporal model (Gemici et al., 2017, §2) as a Pyro model/guide pair.

At every step :math:`t = 0, \dots, T-1`:

.. math::

    h_t &= f_{rnn}(h_{t-1}, z_{t-1}, \Psi_{t-2}, c_t \,[, \phi(x_{t-1})])
        && \text{controller (deterministic)} \\
    \Psi_{t-1} &= f_{mem}(M_{t-1}, h_t), \; M_{t-1} = \mathrm{write}(M_{t-2}, z_{t-1}, h_t)
        && \text{memory read (sees only } z_{<t}) \\
    z_t &\sim p(z_t \mid \Psi_{t-1}, h_t) && \text{prior} \\
    z_t &\sim q(z_t \mid \Psi_{t-1}, h_t, x_t) && \text{posterior (guide)} \\
    x_t &\sim p(x_t \mid z_t, \Psi_{t-1}) && \text{likelihood}

with :math:`z_{-1} = 0` and an empty memory. The *context* :math:`[\Psi_{t-1}, h_t]` conditions
prior, posterior and decoder; the memory-less GTM is the special case with no memory
(:math:`\Psi` empty).

**Frame feedback** (``frame_feedback=True``): the controller also takes the encoder features
:math:`\phi(x_{t-1})` of the previous frame (zeros at :math:`t = 0`), so that prior, posterior
and decoder at step ``t`` see :math:`x_{<t}` through :math:`h_t`. With no memory this is the
VRNN of Chung et al. (2015), the paper's Fig. 1a, :math:`h_t = f(h_{t-1}, z_{t-1}, x_{t-1})`;
without it the controller sees only latents (Fig. 1c), as the paper's GTMMs (Fig. 2). The
model stays a proper factorisation :math:`\prod_t p(x_t \mid z_{\le t}, x_{<t})
p(z_t \mid z_{<t}, x_{<t})`; in :meth:`GTM.unroll` a generated frame is drawn from the
likelihood and encoded before it is fed back.

Pyro structure (see ``docs/CONVENTIONS.md``): ``pyro.plate("sequences", B, dim=-2)`` over
sequences, ``pyro.markov`` over time for the sites ``z_{t}`` (batch shape ``[B, 1]``), and one
vectorised observation site ``"x"`` under ``pyro.plate("time", T, dim=-1)`` (batch shape
``[B, T]``): given all latents the frames are conditionally independent, so one site scores the
whole sequence at once (a single decoder call over ``B*T`` frames instead of ``T`` calls). The
time plate is innermost (dim -1) so that ``x`` keeps its natural ``[B, T, ...]`` layout; this is
why the latent sites carry a trailing singleton dimension. Penalties of the memory enter as
``pyro.factor("penalty_{t}", -penalty)``.

**One deterministic path per step.** Model and guide need the same :math:`(h_t, \Psi_{t-1})`.
When the model replays the guide's latents (``Trace_ELBO``, ``TraceMeanField_ELBO``,
``RenyiELBO``, IWAE evaluation), it reuses the path the guide computed instead of recomputing
it: at step ``t`` the model takes the guide's step if every latent it has seen so far is the
very tensor the guide sampled (an identity test, so the reuse is exact); the prior of those
steps comes from one call of :meth:`~pgtm.models.priors.Prior.over_steps` on all the guide's
contexts. Run on its own (prior samples, ``render_model``) the model computes its own path.
``reuse_path=False`` turns this off.

**A memory that is a latent variable.** The memory state of each sequence is started by the
memory's hooks (:class:`~pgtm.memories.base.Memory`): ``memory.prior_initial_state((B, 1))`` in
the model and ``memory.posterior_initial_state(features [B, 1, T, F], mask [B, 1, T])`` in the
guide, both inside the ``"sequences"`` plate. For the deterministic memories both return the
empty memory; a random memory (the Kanerva memory) samples its site there, so that its
:math:`\log p - \log q` enters every objective through Pyro. The values of the sites a hook
samples join the identity test of path reuse: the model takes the guide's path only if they are
the very tensors the guide sampled. ``generate`` starts the memory with the prior hook, or with
the posterior hook on the observed frames.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from torch import nn

from pgtm.checks import integer
from pgtm.shapes import cat_features, cat_steps
from pgtm.unrolled_linear import unrolling

from .batched_scores import BatchedScores
from .path import FollowedPath, GuidePath, PathState, PathStep


class Generated(NamedTuple):
    """Output of :meth:`GTM.generate` (all ``[B, T, ...]``).

    :ivar weights: read weights ``[B, T, R, N]`` (``None`` for a memory without them).
    :ivar gates: read gates ``[B, T, R]`` (``None`` for a memory without them).
    :ivar write_weights: ``[B, T, H, N]``, the weights with which step ``t`` wrote
        :math:`z_{t-1}`, for a memory whose state records them (NTM, DNC); else ``None``.
    """

    frames: torch.Tensor
    latents: torch.Tensor
    weights: torch.Tensor | None
    gates: torch.Tensor | None
    write_weights: torch.Tensor | None = None


class Unrolled(NamedTuple):
    """Output of :meth:`GTM.unroll` (all ``[B, T, ...]``, stacked over the steps).

    :ivar latents: ``[B, T, Z]``.
    :ivar contexts: ``[B, T, context_size]``, :math:`[\\Psi_{t-1}, h_t]`.
    :ivar weights: read weights ``[B, T, R, N]``, or ``None``.
    :ivar gates: read gates ``[B, T, R]``, or ``None``.
    :ivar write_weights: ``[B, T, H, N]``, the memory's ``write_weights(state)`` after each
        step, or ``None``.
    :ivar memories: ``[B, T, N, W]``, the memory matrix after each step's write (with
        ``keep_memories``), or ``None``.
    """

    latents: torch.Tensor
    contexts: torch.Tensor
    weights: torch.Tensor | None
    gates: torch.Tensor | None
    write_weights: torch.Tensor | None
    memories: torch.Tensor | None


class GTM(nn.Module):
    """A generative temporal model assembled from parts.

    :param frame_shape: shape of one frame, e.g. ``(1, 28, 28)``.
    :param latent_size: :math:`Z`.
    :param controller: e.g. :class:`~pgtm.networks.LSTMController`.
    :param memory: a :class:`~pgtm.memories.base.Memory`.
    :param prior: a :class:`~pgtm.models.priors.Prior`.
    :param posterior: a :class:`~pgtm.models.posteriors.Posterior`.
    :param likelihood: a :class:`~pgtm.models.likelihoods.Likelihood`.
    :param encoder: frames ``[*batch, *frame_shape] -> [*batch, feature_size]``.
    :param decoder: ``[*batch, latent_size + context_size] -> [*batch, *raw_shape]``, the
        likelihood's ``raw_shape`` (``frame_shape`` for most likelihoods).
    :param action_size: size of the per-step context :math:`c_t` (0: none).
    :param frame_feedback: feed the previous frame's encoder features to the controller (see
        above); its input is then ``latent + read + action + encoder.feature_size`` wide.
    :param reuse_path: let the model reuse the guide's deterministic path (exact; see above).
    """

    def __init__(
        self,
        *,
        frame_shape,
        latent_size: int,
        controller: nn.Module,
        memory: nn.Module,
        prior: nn.Module,
        posterior: nn.Module,
        likelihood: nn.Module,
        encoder: nn.Module,
        decoder: nn.Module,
        action_size: int = 0,
        frame_feedback: bool = False,
        reuse_path: bool = True,
    ):
        super().__init__()
        self.frame_shape = tuple(frame_shape)
        self.latent_size = latent_size
        self.action_size = action_size
        self.frame_feedback = frame_feedback
        self.controller = controller
        self.memory = memory
        self.prior = prior
        self.posterior = posterior
        self.likelihood = likelihood
        self.encoder = encoder
        self.decoder = decoder
        self.context_size = memory.read_size + controller.output_size
        self.reuse_path = reuse_path
        self._guide_path: GuidePath | None = None

    # ----------------------------------------------------------------- deterministic path
    def initial_state(self, batch_shape, device=None, dtype=None, memory_state=None) -> PathState:
        """The state before step 0; ``memory_state`` (default: the memory's deterministic
        ``initial_state``) is e.g. the one a memory hook sampled."""
        kwargs = {"device": device, "dtype": dtype}
        if memory_state is None:
            memory_state = self.memory.initial_state(batch_shape, **kwargs)
        return PathState(
            self.controller.initial_state(batch_shape, **kwargs),
            memory_state,
            torch.zeros(*batch_shape, self.memory.read_size, **kwargs),
            torch.zeros(*batch_shape, self.latent_size, **kwargs),
            torch.zeros(*batch_shape, self.encoder.feature_size, **kwargs)
            if self.frame_feedback else None,
        )

    def path_step(self, state: PathState, action: torch.Tensor | None) -> PathStep:
        """Controller update, memory write of :math:`z_{t-1}` and read: one step of the
        deterministic path. ``action`` is :math:`c_t` ``[*batch, action_size]`` or ``None``."""
        if state.frame is not None:
            action = state.frame if action is None else cat_features(action, state.frame)
        h, controller_state = self.controller(state.controller, state.latent, state.read, action)
        out = self.memory(state.memory, h, state.latent)
        context = cat_features(out.read, h)
        new_state = state._replace(controller=controller_state, memory=out.state, read=out.read)
        return PathStep(context, new_state, out.weights, out.gates, out.penalty)

    def next_state(self, step: PathStep, latent: torch.Tensor,
                   frame_features: torch.Tensor | None) -> PathState:
        """The state after a step: its latent :math:`z_t` and, with frame feedback, the
        encoder features :math:`\\phi(x_t)` ``[*batch, F]`` of its frame (ignored without)."""
        return step.state._replace(latent=latent,
                                   frame=frame_features if self.frame_feedback else None)

    # ----------------------------------------------------------------- input checks
    def check_inputs(self, x, c=None, mask=None):
        """Validate ``x [B, T, *frame_shape]``, ``c [B, T, action_size]``, ``mask [B, T]``: their
        shapes always, their values (finite frames in the likelihood's support, a mask that
        is a prefix) while ``pyro.distributions`` validation is on (Pyro's default).

        :returns: ``(x, c, mask)`` with a full mask when ``mask`` is ``None``.
        """
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise ValueError("x must be a floating-point tensor [B, T, *frame_shape]")
        expected = "[B, T, " + ", ".join(map(str, self.frame_shape)) + "]"
        if x.dim() != 2 + len(self.frame_shape) or tuple(x.shape[2:]) != self.frame_shape:
            raise ValueError(f"x must have shape {expected}, got {list(x.shape)}")
        # the values are checked while Pyro validates distributions' arguments (the training
        # loop turns that off after the first step of a batch shape: these checks are a few
        # passes over the frames and a host synchronisation each)
        checks_values = pyro.distributions.is_validation_enabled()
        # one reduction instead of an elementwise mask (20x cheaper); NaN/inf propagate into the
        # float64 sum, which cannot overflow for float32 frames
        if checks_values and not torch.isfinite(x.sum(dtype=torch.float64)):
            raise ValueError("x contains NaN or infinite values")
        outside = self.likelihood.frames_error(x) if checks_values else None
        if outside is not None:
            raise ValueError(outside)
        batch_time = tuple(x.shape[:2])
        if self.action_size:
            if c is None or c.dim() != 3 or tuple(c.shape) != batch_time + (self.action_size,):
                got = None if c is None else list(c.shape)
                raise ValueError(
                    f"c must have shape [B, T, {self.action_size}] = "
                    f"{list(batch_time) + [self.action_size]}, got {got}"
                )
        elif c is not None:
            raise ValueError("c was given but the model was built with action_size=0")
        if mask is None:
            mask = torch.ones(batch_time, dtype=torch.bool, device=x.device)
        elif mask.dtype != torch.bool or tuple(mask.shape) != batch_time:
            raise ValueError(
                f"mask must be a bool tensor of shape [B, T] = {list(batch_time)}, "
                f"got {mask.dtype} {list(mask.shape)}"
            )
        elif checks_values and bool((mask[:, 1:] > mask[:, :-1]).any()):
            raise ValueError("mask must be True on a prefix of each sequence and False after its "
                             "end; it has an observed step after a masked one")
        return x, c, mask

    @staticmethod
    def _start_memory(hook, *args):
        """Run a memory hook (``prior_initial_state`` or ``posterior_initial_state``).

        :returns: ``(state, latents)``: the memory state and the values of the latent sites the
            hook sampled (none for a deterministic memory), for the identity test of path reuse.
        """
        with poutine.trace() as tracer:
            state = hook(*args)
        latents = tuple(
            site["value"]
            for site in tracer.trace.nodes.values()
            if site["type"] == "sample" and not site["is_observed"]
        )
        return state, latents

    def _follow_guide(self, x, c, mask) -> FollowedPath:
        """The path the guide left for the model, if it ran on these very inputs."""
        path = self._guide_path if self.reuse_path else None
        self._guide_path = None  # consumed: keep no graph alive past this call
        return FollowedPath(path if path is not None and path.matches(x, c, mask) else None)

    @staticmethod
    def _action(c, t):
        return None if c is None else c[:, t : t + 1]

    # ----------------------------------------------------------------- Pyro programs
    def model(self, x, c=None, mask=None):
        """The generative model :math:`p(x_{0:T}, z_{0:T})` (a Pyro program).

        :param x: observed frames ``[B, T, *frame_shape]``.
        :param c: context ``[B, T, action_size]`` or ``None``.
        :param mask: ``[B, T]`` bool, False for steps past a sequence's end.
        """
        guide = self._follow_guide(x, c, mask)
        # the guide validated these very tensors already
        x, c, mask = guide.checked_inputs or self.check_inputs(x, c, mask)
        partial = _partial(mask)
        pyro.module("gtm", self)
        batch, length = x.shape[:2]
        features = [None] * length
        if self.frame_feedback:
            features = guide.features or self.encoder(x).split(1, dim=1)
        latents, contexts = [], []
        with pyro.plate("sequences", batch, dim=-2), unrolling():
            memory_state, memory_latents = self._start_memory(
                self.memory.prior_initial_state, (batch, 1), x.device, x.dtype
            )
            guide.start(memory_latents)
            state = self.initial_state((batch, 1), x.device, x.dtype, memory_state)
            scores = BatchedScores(length)
            for t in pyro.markov(range(length)):
                followed = guide.step(t, state)
                step = followed or self.path_step(state, self._action(c, t))
                prior = guide.prior(t, self.prior) if followed else self.prior(step.context)
                with _step_mask(partial, t):
                    z = pyro.sample(f"z_{t}", scores.join(t, prior))
                    scores.record(t, z)
                    if step.penalty is not None:
                        pyro.factor(f"penalty_{t}", -step.penalty)
                state = self.next_state(step, z, features[t])
                latents.append(z)
                contexts.append(step.context)
            decoder_input = cat_features(cat_steps(latents), cat_steps(contexts))
            with pyro.plate("time", length, dim=-1):
                likelihood = self.likelihood(self.decoder(decoder_input))
                pyro.sample("x", likelihood if partial is None else likelihood.mask(partial),
                            obs=x)

    def guide(self, x, c=None, mask=None):
        """The posterior :math:`q(z_{0:T} \\mid x_{0:T}) = \\prod_t q(z_t \\mid \\Psi_{t-1}, h_t,
        x_t)` (a Pyro program with the same signature as :meth:`model`)."""
        inputs = (x, c, mask)
        x, c, mask = self.check_inputs(x, c, mask)
        partial = _partial(mask)
        pyro.module("gtm", self)
        batch, length = x.shape[:2]
        # all frames in one encoder call; split once, as T slices would each back-propagate a
        # full [B, T, F] gradient (O(T^2) in the backward pass)
        encoded = self.encoder(x)  # [B, T, F]
        features = encoded.split(1, dim=1)  # T x [B, 1, F]
        path = GuidePath(inputs, (x, c, mask))
        path.features = features
        with pyro.plate("sequences", batch, dim=-2), unrolling():
            memory_state, path.memory_latents = self._start_memory(
                self.memory.posterior_initial_state, encoded.unsqueeze(1), mask.unsqueeze(1)
            )
            state = self.initial_state((batch, 1), x.device, x.dtype, memory_state)
            scores = BatchedScores(length)
            for t in pyro.markov(range(length)):
                step = self.path_step(state, self._action(c, t))
                with _step_mask(partial, t):
                    posterior = self.posterior(step.context, features[t])
                    z = pyro.sample(f"z_{t}", scores.join(t, posterior))
                    scores.record(t, z)
                path.steps.append(step)
                path.latents.append(z)
                state = self.next_state(step, z, features[t])
        self._guide_path = path if self.reuse_path else None

    # ----------------------------------------------------------------- unroll and generation
    def unroll(
        self,
        length: int,
        num_sequences: int,
        *,
        features: torch.Tensor | None = None,
        observed_steps: int = 0,
        c: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        reparameterised: bool = False,
        keep_memories: bool = False,
        device=None,
        dtype=None,
    ) -> Unrolled:
        """Run the deterministic path over ``length`` steps outside Pyro: latents from the
        posterior for the first ``observed_steps`` steps, then from the prior. The memory
        starts from its posterior hook on the observed features, or from its prior hook when
        nothing is observed. The one loop behind :meth:`generate`, Memory Forcing's rollouts
        and the probes (``model`` and ``guide`` keep their own Pyro loops).

        :param length: :math:`T`.
        :param num_sequences: :math:`B`.
        :param features: ``[B, >= observed_steps, F]`` encoder features of the observed frames.
        :param c: ``[B, T, action_size]`` context, or ``None``.
        :param mask: ``[B, T]`` bool for the memory's posterior hook (default: all observed).
        :param reparameterised: draw with ``rsample`` (differentiable; ``ValueError`` for a
            distribution without it) instead of ``sample``; with frame feedback a generated
            frame is then fed back as the likelihood's mean (a Bernoulli draw has no
            reparameterisation) instead of a draw.
        :param keep_memories: also return every step's :meth:`Memory.memory_matrix`.
        :param device: default: the features', else the parameters'.
        :param dtype: as ``device``.
        """
        reference = features if features is not None else next(self.parameters())
        device = reference.device if device is None else device
        dtype = reference.dtype if dtype is None else dtype
        if observed_steps:
            observed = features[:, :observed_steps]
            if mask is None:
                mask = torch.ones(observed.shape[:-1], dtype=torch.bool, device=device)
            memory_state = self.memory.posterior_initial_state(observed, mask[:, :observed_steps])
        else:
            memory_state = self.memory.prior_initial_state((num_sequences,), device, dtype)
        state = self.initial_state((num_sequences,), device, dtype, memory_state)
        kept = {name: [] for name in Unrolled._fields}
        with unrolling():
            for t in range(length):
                step = self.path_step(state, None if c is None else c[:, t].to(device, dtype))
                if t < observed_steps:
                    z = _draw(self.posterior(step.context, features[:, t]), "posterior",
                              reparameterised)
                else:
                    z = _draw(self.prior(step.context), "prior", reparameterised)
                frame = None
                if self.frame_feedback and t < length - 1:
                    frame = (features[:, t] if t < observed_steps
                             else self.encoder(self._generated_frame(z, step.context,
                                                                     reparameterised)))
                state = self.next_state(step, z, frame)
                kept["latents"].append(z)
                kept["contexts"].append(step.context)
                kept["weights"].append(step.weights)
                kept["gates"].append(step.gates)
                kept["write_weights"].append(self.memory.write_weights(step.state.memory))
                kept["memories"].append(
                    self.memory.memory_matrix(step.state.memory) if keep_memories else None
                )
        return Unrolled(*(None if per_step[0] is None else torch.stack(per_step, 1)
                          for per_step in kept.values()))

    def _generated_frame(self, latent, context, mean: bool) -> torch.Tensor:
        """A frame of the likelihood given :math:`[z_t, \\Psi_{t-1}, h_t]`: its mean or a draw."""
        raw = self.decoder(cat_features(latent, context))
        return self.likelihood.mean(raw) if mean else self.likelihood(raw).sample()

    @torch.no_grad()
    def generate(
        self,
        length: int,
        num_sequences: int | None = None,
        *,
        x: torch.Tensor | None = None,
        c: torch.Tensor | None = None,
        observed_steps: int = 0,
    ) -> Generated:
        """Sample sequences: latents from the posterior for the first ``observed_steps`` frames
        of ``x``, then from the prior ("observe n frames, generate the rest"). A random memory
        is drawn from its prior, or from its posterior given the observed frames.

        :param length: :math:`T`.
        :param num_sequences: :math:`B` (taken from ``x`` or ``c`` when given).
        :param x: ``[B, >= observed_steps, *frame_shape]`` frames to observe.
        :param c: ``[B, T, action_size]`` context, required when the model has one.
        :returns: :class:`Generated` with frame means ``[B, T, *frame_shape]``.
        """
        integer("length", length, 1)
        if observed_steps < 0 or observed_steps > length:
            raise ValueError(f"observed_steps must be in [0, {length}], got {observed_steps}")
        if observed_steps and (x is None or x.shape[1] < observed_steps):
            raise ValueError(f"x must hold at least observed_steps={observed_steps} frames")
        if x is not None and (x.dim() != 2 + len(self.frame_shape)
                              or tuple(x.shape[2:]) != self.frame_shape):
            expected = "[B, T, " + ", ".join(map(str, self.frame_shape)) + "]"
            raise ValueError(f"x must have shape {expected}, got {list(x.shape)}")
        if self.action_size and (c is None or c.shape[1] < length):
            raise ValueError(f"c must have shape [B, {length}, {self.action_size}]")
        for given in (x, c):
            if given is not None:
                num_sequences = given.shape[0]
        if num_sequences is None or num_sequences < 1:
            raise ValueError("num_sequences must be >= 1 (or pass x or c)")
        param = next(self.parameters())  # generation follows the module's device and dtype
        features = None
        if observed_steps:
            features = self.encoder(x[:, :observed_steps].to(param.device, param.dtype))
        path = self.unroll(length, num_sequences, features=features,
                           observed_steps=observed_steps, c=c,
                           device=param.device, dtype=param.dtype)
        frames = self.likelihood.mean(self.decoder(torch.cat([path.latents, path.contexts], -1)))
        return Generated(frames, path.latents, path.weights, path.gates, path.write_weights)


def _partial(mask: torch.Tensor) -> torch.Tensor | None:
    """``mask``, or ``None`` when it observes every step: a full mask is left out of the sites,
    where it would cost masking ops at every site and step for nothing."""
    return None if bool(mask.all()) else mask


def _step_mask(partial: torch.Tensor | None, t: int):
    """The sites of step ``t`` under the mask ``partial`` (``None``: nothing to mask)."""
    return contextlib.nullcontext() if partial is None else poutine.mask(mask=partial[:, t : t + 1])


def _draw(distribution, what: str, reparameterised: bool) -> torch.Tensor:
    if not reparameterised:
        return distribution.sample()
    if not getattr(distribution, "has_rsample", False):
        raise ValueError(f"the {what} must be reparameterisable (has_rsample) here, got "
                         f"{type(distribution).__name__}")
    return distribution.rsample()


