"""Pictures people would rather look at than numbers: sample sequences, per-step KL curves and
read-weight heat maps. Matplotlib runs headless (Agg)."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pgtm.preview import frame_grid, rgb_frames  # noqa: E402


def _prepare(path) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


def frames_for_display(frames: torch.Tensor) -> torch.Tensor:
    """``[B, T, C, H, W]`` frames as 3-channel images of at least 28 pixels a side (vector
    frames such as copy-task rows are scaled up so they stay visible)."""
    b, t, c, h, w = frames.shape
    images = rgb_frames(frames.reshape(b * t, c, h, w).float().clamp(0, 1))
    scale = max(1, -(-28 // max(h, 1)))
    if scale > 1 or w < 28:
        images = torch.nn.functional.interpolate(
            images, size=(h * scale, max(w, 28)), mode="nearest"
        )
    return images.reshape(b, t, 3, images.shape[-2], images.shape[-1])


def marked_frames(frames: torch.Tensor, generated: torch.Tensor | None) -> torch.Tensor:
    """``frames [B, T, C, H, W]`` as displayed images ``[B, T, 3, H', W']`` with the steps where
    ``generated [T]`` (or ``[B, T]``) is True marked: grey frames tinted red, colour frames
    given a red border (a tint would change their colours)."""
    images = frames_for_display(frames.detach().cpu())
    if generated is not None:
        mark = generated.cpu().expand(images.shape[:2])
        if frames.shape[2] == 3:
            _draw_red_border(images, mark)
        else:
            red = images[..., 0, :, :]
            red[mark] = red[mark].clamp(min=0.45)  # dark-red background, strokes stay white
    return images


def save_sequences(path, groups: list[tuple[str, torch.Tensor, torch.Tensor | None]],
                   title: str | None = None) -> str:
    """Write labelled blocks of sequences, one row per sequence, generated frames marked red.

    :param groups: ``(label, frames [B, T, C, H, W], generated)`` per block, e.g. the data,
        then samples; ``generated`` is ``[T]`` bool (the steps the model generated: grey frames are
        tinted red, colour frames get a red border, as a tint would change their colours),
        or ``None`` when none was generated.
    :param title: the figure's title.
    """
    blocks = []
    for label, frames, generated in groups:
        images = marked_frames(frames, generated)
        grid = frame_grid(images, padding=2, pad_value=0.5)
        blocks.append((label, grid.permute(1, 2, 0).numpy()))
    width = blocks[0][1].shape[1] / 80 + 1.6
    heights = [grid.shape[0] for _, grid in blocks]
    fig, axes = plt.subplots(len(blocks), 1, figsize=(width, sum(heights) / 80 + 0.9),
                             gridspec_kw={"height_ratios": heights}, squeeze=False,
                             layout="constrained")
    for ax, (label, grid) in zip(axes[:, 0], blocks, strict=True):
        ax.imshow(grid, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, fontsize=9)
    axes[-1, 0].set_xlabel("time step →  (red: frames the model generated)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    path = _prepare(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _draw_red_border(images: torch.Tensor, mark: torch.Tensor) -> None:
    """Paint, in place, a red border (1 pixel per 32 of frame side) on the frames of
    ``images [B, T, 3, H, W]`` where ``mark [B, T]`` is True."""
    width = max(1, images.shape[-1] // 32)
    border = torch.zeros(images.shape[-2:], dtype=torch.bool)
    border[:width], border[-width:], border[:, :width], border[:, -width:] = True, True, True, True
    red = torch.tensor([0.9, 0.05, 0.05]).view(3, 1, 1)
    marked = images[mark]  # [N, 3, H, W] copy
    images[mark] = torch.where(border, red, marked)


# A point is drawn off-scale when it exceeds this multiple of the upper quartile of all points:
# one sample of one sequence can put a step's mean KL at 1e5 nats and flatten every curve.
OFF_SCALE_FACTOR = 10.0


def off_scale_limit(values) -> float | None:
    """The upper y-limit that keeps the bulk of ``values`` readable, or ``None`` (autoscale) when
    no finite value exceeds ``OFF_SCALE_FACTOR`` times their upper quartile."""
    finite = torch.tensor(
        [float(v) for v in values if v is not None and math.isfinite(v)], dtype=torch.float64
    )
    if finite.numel() == 0:
        return None
    limit = OFF_SCALE_FACTOR * float(finite.quantile(0.75))
    return limit if limit > 0 and float(finite.max()) > limit else None


def plot_step_curves(path, curves: dict[str, list[float]], recall=None, ylabel="KL (nats)",
                     title=None) -> str:
    """Line plot of per-step quantities (e.g. KL per model), recall phase shaded.

    Values far above the rest (see :func:`off_scale_limit`) are cut at the top of the axis and
    marked there with their value, so the other steps and models stay readable."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    finite = [v for values in curves.values() for v in values if v is not None and math.isfinite(v)]
    top = off_scale_limit(finite)
    marked = 0
    for name, values in curves.items():
        (line,) = ax.plot(range(len(values)), values, marker="o", label=name)
        for t, value in enumerate(values):
            if top is not None and value is not None and math.isfinite(value) and value > top:
                ax.plot(t, top, marker="^", color=line.get_color(), ms=9, clip_on=False)
                ax.annotate(f"{value:.1e}", (t, top), textcoords="offset points",
                            xytext=(0, 7 + 8 * (marked % 2)), ha="center", fontsize=7,
                            color=line.get_color())
                marked += 1
    if top is not None:
        bottom = min(finite)
        ax.set_ylim(bottom - 0.05 * (top - bottom), top)
        ax.text(0.995, 0.02, "▲ off-scale: value above it", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7)
    if recall is not None:
        for t, is_recall in enumerate(recall):
            if is_recall:
                ax.axvspan(t - 0.5, t + 0.5, color="tab:red", alpha=0.08, lw=0)
    ax.set_xlabel("time step")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, pad=22 if top is not None else None)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = _prepare(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_read_weights(path, weights: torch.Tensor, gates: torch.Tensor | None = None,
                      title=None) -> str:
    """Heat map of read weights of one sequence, one panel per head.

    :param weights: ``[T, R, N]`` (time, head, slot).
    :param gates: ``[T, R]`` read gates, shown as a strip under each panel.
    """
    weights = weights.detach().cpu()
    steps, heads, _ = weights.shape
    fig, axes = plt.subplots(
        1, heads, figsize=(2.4 * heads + 1.0, 3.2), squeeze=False, layout="constrained"
    )
    for r, ax in enumerate(axes[0]):
        shown = weights[:, r, :]
        if gates is not None:
            shown = shown * gates.detach().cpu()[:, r : r + 1]
        image = ax.imshow(shown.T.numpy(), aspect="auto", origin="lower", vmin=0, vmax=1,
                          cmap="viridis")
        ax.set_title(f"head {r}" + (" × gate" if gates is not None else ""), fontsize=10)
        ax.set_xlabel("time step")
        if r == 0:
            ax.set_ylabel("memory slot")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.9, label="weight")
    if title:
        fig.suptitle(title)
    path = _prepare(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bounds_vs_particles(path, sweeps: dict[str, dict], title: str) -> str:
    """Bound per frame against the number of particles ``K`` (log scale; one colour per model,
    IWAE solid with circles, SMC dashed with squares), so a reader sees whether a bound has
    stopped growing and by how much SMC is above the IWAE; beside it, when SMC was run, the
    filter's effective sample size per step at the largest ``K`` as a fraction of ``K`` (log
    scale), with the resampling threshold.

    :param sweeps: label -> a :func:`~pgtm.inference.bounds.bound_sweep` result.
    """
    with_smc = any("smc" in sweep for sweep in sweeps.values())
    fig, axes = plt.subplots(1, 2 if with_smc else 1, figsize=(11 if with_smc else 6.4, 4.6),
                             squeeze=False)
    bounds_ax = axes[0, 0]
    k_max = 1
    for i, (label, sweep) in enumerate(sweeps.items()):
        colour = f"C{i}"
        for bound, style in (("iwae", "-o"), ("smc", "--s")):
            if bound not in sweep:
                continue
            ks = sorted(int(k) for k in sweep[bound])
            values = [sweep[bound][str(k)]["per_frame_mean"] for k in ks]
            bounds_ax.plot(ks, values, style, color=colour, label=f"{label}: {bound.upper()}")
        if "smc" in sweep:
            k_max = max(int(k) for k in sweep["smc"])
            ess = [v / k_max for v in sweep["smc"][str(k_max)]["ess"]]
            axes[0, 1].plot(range(len(ess)), ess, "-o", markersize=3, color=colour, label=label)
    bounds_ax.set_xscale("log")
    bounds_ax.set_xlabel("particles K (log scale)")
    bounds_ax.set_ylabel("lower bound of log p(x) per frame (nats)")
    bounds_ax.set_title("bounds against K (higher is tighter)", fontsize=10)
    bounds_ax.grid(True, which="both", alpha=0.3)
    bounds_ax.legend(fontsize=8)
    if with_smc:
        ess_ax = axes[0, 1]
        threshold = next(iter(sweeps.values()))["ess_threshold"]
        ess_ax.axhline(threshold, color="grey", linestyle=":", label="resampling threshold")
        ess_ax.set_yscale("log")
        ess_ax.set_ylim(0.5 / k_max, 1.5)
        ess_ax.set_xlabel("step t")
        ess_ax.set_ylabel("ESS / K before resampling (log scale)")
        ess_ax.set_title(f"SMC effective sample size at K = {k_max}", fontsize=10)
        ess_ax.grid(True, which="both", alpha=0.3)
        ess_ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = _prepare(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")
_DASHES = ("-", "--", "-.", ":")
#: panels of quantities in [0, 1], drawn on that scale
_UNIT_RANGE = ("max_weight", "mass", "gate", "hit_rate")


def plot_read_head_dynamics(path, records: list[dict], title: str | None = None) -> str:
    """Per-head entropy, max weight, mass, gate (and hit rate) over training, and per-head heat maps
    of the mean weight on each slot at the recall steps (training step × slot)."""
    if not records:
        raise ValueError("records is empty: nothing to plot")
    steps = [r["step"] for r in records]
    heads = len(records[0]["entropy"])
    panels = [k for k in ("entropy", "max_weight", "mass", "gate", "hit_rate") if k in records[0]]
    fig, axes = plt.subplots(2, max(len(panels), heads), figsize=(3.0 * max(len(panels), heads),
                             6.0), squeeze=False, layout="constrained")
    for ax, key in zip(axes[0], panels, strict=False):
        for h in range(heads):
            # heads often coincide (hit rate 0, mass 1): later heads get smaller, hollow
            # markers and their own dash, so every head stays visible where they overlap
            ax.plot(steps, [r[key][h] for r in records], label=f"head {h}",
                    marker=_MARKERS[h % len(_MARKERS)], markersize=max(9 - 1.5 * h, 3),
                    markerfacecolor="none", linestyle=_DASHES[h % len(_DASHES)], alpha=0.85)
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        if key in _UNIT_RANGE:  # keep normalised masses at 1 +- 1e-8 from filling the panel
            top = max(1.0, max(max(r[key]) for r in records))
            ax.set_ylim(-0.03 * top, 1.05 * top)
    axes[0][0].legend(fontsize=7)
    for ax in axes[0][len(panels):]:
        ax.axis("off")
    image = None
    for h, ax in enumerate(axes[1][:heads]):
        profile = torch.tensor([r["slot_profile"][h] for r in records])  # [E, N]
        # one evaluation has no width of its own: give it half a period on either side
        half = (steps[-1] - steps[0]) / (2 * (len(steps) - 1)) if len(steps) > 1 else 0.5
        image = ax.imshow(profile.T.numpy(), aspect="auto", origin="lower", vmin=0, vmax=1,
                          extent=(steps[0] - half, steps[-1] + half, -0.5,
                                  profile.shape[1] - 0.5))
        ax.set_title(f"head {h}: mean weight per slot", fontsize=9)
        ax.set_xlabel("training step")
        if h == 0:
            ax.set_ylabel("slot")
    for ax in axes[1][heads:]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes[1].tolist(), shrink=0.8, label="weight")
    if title:
        fig.suptitle(title)
    fig.savefig(_prepare(path), dpi=100)
    plt.close(fig)
    return os.fspath(path)
