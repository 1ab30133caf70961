"""Assemble GTMs from named (or user-supplied) parts.

Every part can be given by name or as a class, so swapping a prior is one argument::

    gtm = build_gtm("introspective", frame_shape=(1, 28, 28), sequence_length=15,
                    prior="student-t")          # or prior=MyPrior (a Prior subclass)
"""

from __future__ import annotations

import inspect

from pgtm.inception import InceptionDecoder, InceptionEncoder
from pgtm.memories.base import NoMemory
from pgtm.memories.dnc import DNCMemory
from pgtm.memories.fast_weights import FastWeightsMemory
from pgtm.memories.introspective import IntrospectiveMemory
from pgtm.memories.kanerva import KanervaMemory
from pgtm.memories.lru import LRUMemory
from pgtm.memories.ntm import NTMMemory
from pgtm.models.gtm import GTM
from pgtm.models.likelihoods import LIKELIHOODS
from pgtm.models.posteriors import POSTERIORS
from pgtm.models.priors import PRIORS
from pgtm.networks import (
    IMAGE_SHAPE,
    ConvDecoder,
    ConvEncoder,
    LSTMController,
    MLPDecoder,
    MLPEncoder,
    conv_downsamplings,
)

MEMORIES = {
    "vrnn": NoMemory,
    "introspective": IntrospectiveMemory,
    "ntm": NTMMemory,
    "lru": LRUMemory,
    "dnc": DNCMemory,
    "fast-weights": FastWeightsMemory,
    "kanerva": KanervaMemory,
}
#: memories whose number of slots defaults to at least the sequence length
_SLOTS_FROM_LENGTH = {
    IntrospectiveMemory: 0,
    NTMMemory: 32,
    LRUMemory: 32,
    DNCMemory: 32,
    FastWeightsMemory: 0,
}
#: encoder/decoder pairs: name -> (encoder class, decoder class); "auto" picks conv for image
#: frames and mlp for the rest
NETWORKS = {
    "conv": (ConvEncoder, ConvDecoder),
    "mlp": (MLPEncoder, MLPDecoder),
    "inception": (InceptionEncoder, InceptionDecoder),
}


def resolve(kind: str, value, registry: dict):
    """Return ``registry[value]`` for a name, or ``value`` itself when it is a class/callable."""
    if isinstance(value, str):
        if value not in registry:
            raise ValueError(f"unknown {kind} {value!r}; choose one of {sorted(registry)}")
        return registry[value]
    if callable(value):
        return value
    raise ValueError(f"{kind} must be a name in {sorted(registry)} or a class, got {value!r}")


def build_gtm(
    memory: str = "introspective",
    *,
    frame_shape=IMAGE_SHAPE,
    sequence_length: int | None = None,
    action_size: int = 0,
    latent_size: int = 32,
    controller_size: int = 256,
    feature_size: int = 256,
    network: str = "auto",
    prior="learned-gaussian",
    posterior="gaussian",
    likelihood="bernoulli",
    orthogonal_init: bool = False,
    reuse_path: bool = True,
    **memory_options,
) -> GTM:
    """Build a GTM with default sizes from the paper (latent 32, LSTM 256, 5 read heads).

    :param memory: ``"vrnn"`` (no memory), ``"introspective"``, ``"ntm"``, ``"lru"``,
        ``"dnc"``, ``"fast-weights"``, ``"kanerva"`` or a
        :class:`~pgtm.memories.base.Memory` subclass taking ``(latent_size=, controller_size=,
        **memory_options)`` (and ``feature_size=``, the encoder's output size, when its
        constructor has that argument, as the Kanerva memory, whose guide writes the encoder
        features).
    :param frame_shape: frame shape; image frames ``(C, H, W)`` use convolutional networks by
        default.
    :param sequence_length: :math:`T`; the Introspective buffer keeps that many latents, the
        fast-weights history that many vectors, and the content-addressed memories get
        ``max(32, T)`` slots, unless ``num_slots`` is given.
    :param network: ``"conv"``, ``"mlp"``, ``"inception"`` (inception-like blocks with batch
        norm, :mod:`pgtm.inception`) or ``"auto"`` (conv for image frames whose sides halve
        down to 8 or less, e.g. 28x28, 32x32, 64x64; mlp for the rest).
    :param prior: name in :data:`~pgtm.models.priors.PRIORS` or a ``Prior`` subclass.
    :param posterior: name in :data:`~pgtm.models.posteriors.POSTERIORS` or a subclass.
    :param likelihood: name in :data:`~pgtm.models.likelihoods.LIKELIHOODS` or a subclass.
    :param memory_options: passed to the memory (e.g. ``num_heads``, ``weighting``, ``sparsity``).
    """
    frame_shape = tuple(frame_shape)
    memory_cls = resolve("memory", memory, MEMORIES)
    prior_cls = resolve("prior", prior, PRIORS)
    posterior_cls = resolve("posterior", posterior, POSTERIORS)
    likelihood_cls = resolve("likelihood", likelihood, LIKELIHOODS)
    if network == "auto":
        network = "conv" if _is_image(frame_shape) else "mlp"
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {tuple(NETWORKS)} or 'auto', got {network!r}")
    if network != "mlp":
        try:
            conv_downsamplings(frame_shape)
        except ValueError as error:
            raise ValueError(f"network={network!r}: {error}") from None
    for name, value in (("latent_size", latent_size), ("controller_size", controller_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if memory_cls in _SLOTS_FROM_LENGTH and "num_slots" not in memory_options:
        if sequence_length is None:
            raise ValueError(f"memory {memory!r} needs sequence_length (or num_slots)")
        memory_options["num_slots"] = max(_SLOTS_FROM_LENGTH[memory_cls], sequence_length)

    if "feature_size" in _constructor_arguments(memory_cls):
        memory_options.setdefault("feature_size", feature_size)
    mem = memory_cls(latent_size=latent_size, controller_size=controller_size, **memory_options)
    controller = LSTMController(
        latent_size + mem.read_size + action_size, controller_size, orthogonal_init=orthogonal_init
    )
    context_size = mem.read_size + controller.output_size
    likelihood_module = likelihood_cls(frame_shape)
    # the decoder's output is what the likelihood reads: its raw_shape (e.g. mean and scale)
    raw_shape = getattr(likelihood_module, "raw_shape", frame_shape)
    if network == "mlp":
        encoder = MLPEncoder(frame_shape, feature_size)
        decoder = MLPDecoder(latent_size + context_size, raw_shape)
    else:
        encoder_cls, decoder_cls = NETWORKS[network]
        encoder = encoder_cls(feature_size, frame_shape=frame_shape)
        decoder = decoder_cls(latent_size + context_size, output_shape=raw_shape)
    return GTM(
        frame_shape=frame_shape,
        latent_size=latent_size,
        controller=controller,
        memory=mem,
        prior=prior_cls(context_size, latent_size),
        posterior=posterior_cls(context_size, feature_size, latent_size),
        likelihood=likelihood_module,
        encoder=encoder,
        decoder=decoder,
        action_size=action_size,
        reuse_path=reuse_path,
    )


def _is_image(frame_shape) -> bool:
    try:
        conv_downsamplings(frame_shape)
    except ValueError:
        return False
    return True


def _constructor_arguments(cls) -> set[str]:
    try:
        return set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):  # no introspectable signature
        return set()


def count_parameters(module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
