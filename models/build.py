"""Assemble GTMs from named (or user-supplied) parts.

Every part can be given by name or as a class, so swapping a prior is one argument::

    gtm = build_gtm("introspective", frame_shape=(1, 28, 28), sequence_length=15,
                    prior="student-t")          # or prior=MyPrior (a Prior subclass)

Models compared with each other can be matched in size, as the paper matches every model at
about 1.86 M parameters: ``build_gtm(..., parameter_budget=1_860_000)`` chooses the controller's
LSTM size (the one width every model has) by :func:`controller_size_for_budget`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from pgtm.checks import integer, number
from pgtm.inception import InceptionDecoder, InceptionEncoder
from pgtm.memories import MEMORIES, Memory
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

#: encoder/decoder pairs: name -> (encoder class, decoder class); "auto" picks conv for image
#: frames and mlp for the rest
NETWORKS = {
    "conv": (ConvEncoder, ConvDecoder),
    "mlp": (MLPEncoder, MLPDecoder),
    "inception": (InceptionEncoder, InceptionDecoder),
}
DEFAULT_CONTROLLER_SIZE = 256
#: the largest relative distance of a matched parameter count from its budget
PARAMETER_BUDGET_TOLERANCE = 0.02
#: the controller sizes searched for a budget are 1 .. this (over 10^10 parameters at the top)
_LARGEST_CONTROLLER_SIZE = 2**16


def resolve(kind: str, value, registry: dict):
    """Return ``registry[value]`` for a name, the class a ``"module:Class"`` or
    ``"path/to/script.py:Class"`` reference names (see :func:`class_reference`), or ``value``
    itself when it is a class/callable."""
    if isinstance(value, str):
        if value in registry:
            return registry[value]
        if ":" in value:
            return _import_class(kind, value)
        raise ValueError(f"unknown {kind} {value!r}; choose one of {sorted(registry)} or give "
                         "'module:Class'")
    if callable(value):
        return value
    raise ValueError(f"{kind} must be a name in {sorted(registry)} or a class, got {value!r}")


def class_reference(cls) -> str:
    """An importable reference to a user's class: ``"module:Class"``, or for a class defined in
    the script being run (``__main__``) ``"/abs/path/script.py:Class"``, which
    :func:`resolve` loads by path (the script's ``if __name__ == "__main__":`` part does not
    run)."""
    module = cls.__module__
    if module == "__main__":
        script = getattr(sys.modules["__main__"], "__file__", None)
        if script is not None:
            module = os.path.abspath(script)
    return f"{module}:{cls.__qualname__}"


def _import_class(kind: str, reference: str):
    module_name, _, qualname = reference.rpartition(":")
    try:
        if module_name.endswith(".py"):
            name = f"pgtm_user_{Path(module_name).stem}"
            module = sys.modules.get(name)
            if module is None:
                spec = importlib.util.spec_from_file_location(name, module_name)
                if spec is None:
                    raise ImportError(f"no Python file at {module_name}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        found = module
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError, OSError) as e:
        raise ValueError(
            f"{kind}: cannot import {reference!r} ({type(e).__name__}: {e}); define the class "
            "in a module on the Python path (or keep the script at that path)"
        ) from e
    return found


def build_gtm(
    memory: str = "introspective",
    *,
    frame_shape=IMAGE_SHAPE,
    sequence_length: int | None = None,
    action_size: int = 0,
    latent_size: int = 32,
    controller_size: int | None = None,
    parameter_budget: int | None = None,
    feature_size: int = 256,
    network: str = "auto",
    prior="learned-gaussian",
    posterior="gaussian",
    likelihood="bernoulli",
    orthogonal_init: bool = False,
    frame_feedback: bool = False,
    min_scale: float | None = None,
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
    :param controller_size: the controller's LSTM size :math:`H` (default 256).
    :param parameter_budget: instead of ``controller_size``, a total number of parameters
        :math:`N`: :math:`H` is chosen so that :func:`count_parameters` is within 2% of
        :math:`N` (:func:`controller_size_for_budget`); the model's ``controller.output_size``
        tells which.
    :param network: ``"conv"``, ``"mlp"``, ``"inception"`` (inception-like blocks with batch
        norm, :mod:`pgtm.inception`) or ``"auto"`` (conv for image frames whose sides halve
        down to 8 or less, e.g. 28x28, 32x32, 64x64; mlp for the rest).
    :param prior: name in :data:`~pgtm.models.priors.PRIORS` or a ``Prior`` subclass.
    :param posterior: name in :data:`~pgtm.models.posteriors.POSTERIORS` or a subclass.
    :param likelihood: name in :data:`~pgtm.models.likelihoods.LIKELIHOODS` or a subclass.
    :param frame_feedback: feed the previous frame's encoder features to the controller (with
        ``"vrnn"``: the VRNN of the paper's Fig. 1a; see :class:`~pgtm.models.gtm.GTM`).
    :param min_scale: the floor of the prior's and the posterior's scales, > 0 (default: each
        class's own, 1e-3 for the built-in ones); both classes must take a ``min_scale``
        argument. A larger floor bounds the KL a collapsing prior scale can reach.
    :param memory_options: passed to the memory (e.g. ``num_heads``, ``weighting``, ``sparsity``).
    :raises ValueError: unknown parts, bad sizes, or a budget no controller size meets.
    """
    parts = {
        "frame_shape": frame_shape, "sequence_length": sequence_length,
        "action_size": action_size, "latent_size": latent_size, "feature_size": feature_size,
        "network": network, "prior": prior, "posterior": posterior, "likelihood": likelihood,
        "orthogonal_init": orthogonal_init, "frame_feedback": frame_feedback,
        "min_scale": min_scale, "reuse_path": reuse_path, **memory_options,
    }
    if parameter_budget is not None:
        if controller_size is not None:
            raise ValueError(
                "give controller_size or parameter_budget, not both (the budget chooses the "
                f"controller size); got controller_size={controller_size!r}"
            )
        controller_size = controller_size_for_budget(memory, parameter_budget, **parts)
    elif controller_size is None:
        controller_size = DEFAULT_CONTROLLER_SIZE
    return _assemble(memory, controller_size=controller_size, **parts)


def controller_size_for_budget(
    memory, parameter_budget: int, *, tolerance: float = PARAMETER_BUDGET_TOLERANCE, **parts
) -> int:
    """The controller size :math:`H` whose GTM has the parameter count nearest to
    ``parameter_budget``, found by bisection on the integer :math:`H` (the count grows with
    :math:`H`); deterministic, and it leaves the random number generators untouched (the
    candidates are built on the ``meta`` device: shapes only).

    :param memory: as for :func:`build_gtm`.
    :param parameter_budget: the wanted :func:`count_parameters`, an integer >= 1.
    :param tolerance: the largest relative distance allowed, in ``(0, 1)`` (default 2%).
    :param parts: every other argument of :func:`build_gtm` but ``controller_size``.
    :returns: :math:`H` in ``[1, 65536]``, the smaller one on a tie.
    :raises ValueError: a bad budget or tolerance, or no :math:`H` within ``tolerance``.
    """
    integer("parameter_budget", parameter_budget, 1)
    number("tolerance", tolerance, 0, 1, low_open=True, high_open=True)
    counts: dict[int, int] = {}

    def count(width: int) -> int:
        if width not in counts:
            with torch.device("meta"):
                counts[width] = count_parameters(_assemble(memory, controller_size=width, **parts))
        return counts[width]

    # invariant: count(below) < budget <= count(above), with below = 0 standing for "none"
    below, above = 0, 1
    while count(above) < parameter_budget:
        if above == _LARGEST_CONTROLLER_SIZE:
            raise ValueError(
                f"parameter_budget must be <= {count(above)} (the parameter count at "
                f"controller_size={above}); got {parameter_budget}"
            )
        below, above = above, min(2 * above, _LARGEST_CONTROLLER_SIZE)
    while above - below > 1:
        middle = (below + above) // 2
        if count(middle) < parameter_budget:
            below = middle
        else:
            above = middle
    nearest = [w for w in (below, above) if w >= 1]
    best = min(nearest, key=lambda w: abs(count(w) - parameter_budget))
    if abs(count(best) - parameter_budget) <= tolerance * parameter_budget:
        return best
    if count(1) > parameter_budget:
        smallest = math.ceil(count(1) / (1 + tolerance))
        raise ValueError(
            f"parameter_budget must be >= {smallest} for this model (it has {count(1)} "
            f"parameters at controller_size=1, the match must be within {tolerance:.0%}); got "
            f"{parameter_budget}"
        )
    raise ValueError(
        f"parameter_budget={parameter_budget} cannot be met within {tolerance:.0%}: "
        f"controller_size={below} gives {count(below)} parameters and {above} gives "
        f"{count(above)}"
    )


def _assemble(
    memory,
    *,
    frame_shape,
    sequence_length,
    action_size,
    latent_size,
    controller_size,
    feature_size,
    network,
    prior,
    posterior,
    likelihood,
    orthogonal_init,
    frame_feedback,
    min_scale,
    reuse_path,
    **memory_options,
) -> GTM:
    """:func:`build_gtm` with every size resolved."""
    frame_shape = tuple(frame_shape)
    if not frame_shape or not all(isinstance(n, int) and n >= 1 for n in frame_shape):
        raise ValueError(f"frame_shape must be positive integers (C, H, W), got {frame_shape}")
    memory_cls = resolve("memory", memory, MEMORIES)
    prior_cls = resolve("prior", prior, PRIORS)
    posterior_cls = resolve("posterior", posterior, POSTERIORS)
    likelihood_cls = resolve("likelihood", likelihood, LIKELIHOODS)
    floor = {}
    if min_scale is not None:
        for kind, name, cls in (("prior", prior, prior_cls),
                                ("posterior", posterior, posterior_cls)):
            if "min_scale" not in _constructor_arguments(cls):
                raise ValueError(f"min_scale: the {kind} {name!r} has no scale floor to set "
                                 "(its constructor takes no min_scale)")
        floor["min_scale"] = min_scale
    if network == "auto":
        network = "conv" if _is_image(frame_shape) else "mlp"
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {tuple(NETWORKS)} or 'auto', got {network!r}")
    if network != "mlp":
        try:
            conv_downsamplings(frame_shape)
        except ValueError as error:
            raise ValueError(f"network={network!r}: {error}") from None
    integer("latent_size", latent_size, 1)
    integer("controller_size", controller_size, 1)
    integer("action_size", action_size, 0)
    _check_memory_options(memory, memory_cls, memory_options)
    if not (isinstance(memory_cls, type) and issubclass(memory_cls, Memory)):
        raise ValueError(f"memory must be a name in {sorted(MEMORIES)} or a subclass of "
                         f"pgtm.memories.Memory, got {memory!r}")
    if memory_cls.min_slots is not None and "num_slots" not in memory_options:
        if sequence_length is None:
            raise ValueError(f"memory {memory!r} needs sequence_length (or num_slots)")
        memory_options["num_slots"] = memory_cls.default_num_slots(sequence_length)

    if "feature_size" in _constructor_arguments(memory_cls):
        memory_options.setdefault("feature_size", feature_size)
    mem = memory_cls(latent_size=latent_size, controller_size=controller_size, **memory_options)
    fed_back = feature_size if frame_feedback else 0
    controller = LSTMController(latent_size + mem.read_size + action_size + fed_back,
                                controller_size, orthogonal_init=orthogonal_init)
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
        prior=prior_cls(context_size, latent_size, **floor),
        posterior=posterior_cls(context_size, feature_size, latent_size, **floor),
        likelihood=likelihood_module,
        encoder=encoder,
        decoder=decoder,
        action_size=action_size,
        frame_feedback=frame_feedback,
        reuse_path=reuse_path,
    )


def memory_options(memory) -> dict[str, Any]:
    """The options a memory takes (its constructor's arguments beyond the sizes the builder
    passes), with their defaults (``None`` where the builder chooses, e.g. ``num_slots``).

    :param memory: a name in :data:`MEMORIES` or a memory class.
    """
    memory_cls = resolve("memory", memory, MEMORIES)
    try:
        parameters = inspect.signature(memory_cls).parameters.values()
    except (TypeError, ValueError):
        return {}
    built = {"latent_size", "controller_size", "feature_size"}
    return {p.name: None if p.default is inspect.Parameter.empty else p.default
            for p in parameters if p.name not in built
            and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}


def _check_memory_options(memory, memory_cls, options: dict) -> None:
    """Every option must be an argument of the memory's constructor (unless it takes
    ``**kwargs``): ``num_heads`` for the VRNN is an error, not silently ignored."""
    try:
        parameters = inspect.signature(memory_cls).parameters.values()
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    accepted = {p.name for p in parameters} - {"latent_size", "controller_size"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"{unknown[0]}: memory {memory!r} takes no option {unknown[0]!r}; its "
                         f"options: {', '.join(sorted(accepted)) or 'none'}")


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
