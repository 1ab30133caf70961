"""Every bad input gets one line naming the argument and what it expects: the command line
(exit status 2, one ``pgtm ...: error:`` line on stderr, no traceback) and the API (a
``ValueError`` whose one-line message names the argument). ``--debug`` shows the traceback."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from pgtm.cli import main

TINY = ["--latent-size", "4", "--controller-size", "8", "--network", "mlp", "--batch-size", "2",
        "--eval-sequences", "2", "--iwae-particles", "2", "--no-progress", "--steps", "2",
        "--eval-every", "2", "--checkpoint-every", "2"]


@pytest.fixture(autouse=True)
def bundled_data(monkeypatch, tmp_path):
    monkeypatch.delenv("PGTM_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # a bad --out that slipped through must not write into the repo


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-step VRNN run on perfect recall (l = 4, k = 2)."""
    run = tmp_path_factory.mktemp("bad-input") / "run"
    argv = ["train", "perfect-recall", "-l", "4", "-k", "2", "--model", "vrnn", "--out",
            str(run), *TINY]
    assert main(argv) == 0
    return run


def _run_copy(trained: Path, tmp_path: Path, edit) -> Path:
    run = tmp_path / "copy"
    shutil.copytree(trained, run)
    edit(run)
    return run


class Exec:
    """A pickle that would run code when loaded without ``weights_only``."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/pgtm-pwned",))


def _crafted_step(step):
    def edit(run):
        ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
        ckpt["step"] = step
        torch.save(ckpt, run / "checkpoint.pt")
    return edit


RUN_EDITS = {
    "truncated-checkpoint": lambda run: (run / "checkpoint.pt").write_bytes(
        (run / "checkpoint.pt").read_bytes()[:1000]),
    "empty-checkpoint": lambda run: (run / "checkpoint.pt").write_bytes(b""),
    "code-running-checkpoint": lambda run: (run / "checkpoint.pt").write_bytes(
        pickle.dumps(Exec())),
    "huge-step": _crafted_step(10**12),
    "negative-step": _crafted_step(-5),
    "corrupt-run-json": lambda run: (run / "run.json").write_text("{not json"),
    "unknown-model-in-run-json": lambda run: (run / "run.json").write_text(json.dumps(
        {**json.loads((run / "run.json").read_text()), "model": "no-such-memory"})),
    "no-checkpoint": lambda run: (run / "checkpoint.pt").unlink(),
    "checkpoint-of-another-model": lambda run: (run / "run.json").write_text(json.dumps(
        {**(spec := json.loads((run / "run.json").read_text())),
         "model_options": {**spec["model_options"], "latent_size": 6}})),
}

#: (id, argv after the command, what the one line must contain)
TRAIN = [
    ("steps-0", ["--steps", "0"], "--steps"),
    ("steps-negative", ["--steps", "-1"], "--steps"),
    ("steps-word", ["--steps", "many"], "--steps"),
    ("steps-float", ["--steps", "1.5"], "--steps"),
    ("batch-size-0", ["--batch-size", "0"], "--batch-size"),
    ("batch-size-negative", ["--batch-size", "-3"], "--batch-size"),
    ("learning-rate-0", ["--learning-rate", "0"], "--learning-rate"),
    ("learning-rate-negative", ["--learning-rate", "-1"], "--learning-rate"),
    ("learning-rate-nan", ["--learning-rate", "nan"], "--learning-rate"),
    ("learning-rate-inf", ["--learning-rate", "inf"], "--learning-rate"),
    ("learning-rate-word", ["--learning-rate", "fast"], "--learning-rate"),
    ("kl-anneal-negative", ["--kl-anneal-steps", "-1"], "--kl-anneal-steps"),
    ("clip-norm-0", ["--clip-norm", "0"], "--clip-norm"),
    ("clip-norm-nan", ["--clip-norm", "nan"], "--clip-norm"),
    ("elbo-unknown", ["--elbo", "renyi"], "--elbo"),
    ("train-particles-0", ["--train-particles", "0"], "--train-particles"),
    ("compile-meanfield", ["--compile", "--elbo", "meanfield"], "--compile"),
    ("compile-kanerva", ["--model", "kanerva", "--compile"], "--compile"),
    ("device-tpu", ["--device", "tpu"], "--device"),
    ("device-cuda-word", ["--device", "cuda:x"], "--device"),
    ("device-empty", ["--device", ""], "--device"),
    ("threads-0", ["--threads", "0"], "--threads"),
    ("threads-negative", ["--threads", "-1"], "--threads"),
    ("seed-negative", ["--seed", "-1"], "--seed"),
    ("eval-every-0", ["--eval-every", "0"], "--eval-every"),
    ("checkpoint-every-0", ["--checkpoint-every", "0"], "--checkpoint-every"),
    ("log-every-0", ["--log-every", "0"], "--log-every"),
    ("eval-sequences-0", ["--eval-sequences", "0"], "--eval-sequences"),
    ("iwae-particles-0", ["--iwae-particles", "0"], "--iwae-particles"),
    ("model-unknown", ["--model", "lstm"], "--model"),
    ("prior-unknown", ["--prior", "laplace"], "--prior"),
    ("posterior-unknown", ["--posterior", "normalising"], "--posterior"),
    ("likelihood-unknown", ["--likelihood", "poisson"], "--likelihood"),
    ("network-unknown", ["--network", "resnet"], "--network"),
    ("latent-size-0", ["--latent-size", "0"], "--latent-size"),
    ("controller-size-0", ["--controller-size", "0"], "--controller-size"),
    ("num-heads-0", ["--num-heads", "0"], "--num-heads"),
    ("num-heads-vrnn", ["--model", "vrnn", "--num-heads", "3"], "--num-heads"),
    ("num-heads-fast-weights", ["--model", "fast-weights", "--num-heads", "2"], "--num-heads"),
    ("num-heads-kanerva", ["--model", "kanerva", "--num-heads", "2"], "--num-heads"),
    ("weighting-dnc", ["--model", "dnc", "--weighting", "softmax"], "--weighting"),
    ("weighting-unknown", ["--weighting", "max"], "--weighting"),
    ("sparsity-nan", ["--sparsity", "nan"], "--sparsity"),
    ("sparsity-negative", ["--sparsity", "-1"], "--sparsity"),
    ("sparsity-vrnn", ["--model", "vrnn", "--sparsity", "0.1"], "--sparsity"),
    ("fast-size-vrnn", ["--model", "vrnn", "--fast-size", "8"], "--fast-size"),
    ("fast-size-0", ["--model", "fast-weights", "--fast-size", "0"], "--fast-size"),
    ("fast-decay-2", ["--model", "fast-weights", "--fast-decay", "2"], "--fast-decay"),
    ("fast-learning-rate-0", ["--model", "fast-weights", "--fast-learning-rate", "0"],
     "--fast-learning-rate"),
    ("inner-steps-0", ["--model", "fast-weights", "--inner-steps", "0"], "--inner-steps"),
    ("kanerva-slots-0", ["--model", "kanerva", "--kanerva-slots", "0"], "--kanerva-slots"),
    ("kanerva-code-size-0", ["--model", "kanerva", "--kanerva-code-size", "0"],
     "--kanerva-code-size"),
    ("kanerva-regulariser-0", ["--model", "kanerva", "--kanerva-address-regulariser", "0"],
     "--kanerva-address-regulariser"),
    ("kanerva-noise-0", ["--model", "kanerva", "--kanerva-write-noise", "0"],
     "--kanerva-write-noise"),
    ("kanerva-noise-dnc", ["--model", "dnc", "--kanerva-write-noise", "1"],
     "--kanerva-write-noise"),
    ("dnc-strength-low", ["--model", "dnc", "--dnc-read-strength-init", "0.5"],
     "--dnc-read-strength-init"),
    ("dnc-content-mode-high", ["--model", "dnc", "--dnc-content-mode-init", "1.5"],
     "--dnc-content-mode-init"),
    ("dnc-stamp-odd", ["--model", "dnc", "--dnc-time-stamp-size", "3"],
     "--dnc-time-stamp-size"),
    ("dnc-stamp-introspective", ["--dnc-time-stamp-size", "4"], "--dnc-time-stamp-size"),
    ("mf-weight-alone", ["--mf-weight", "1"], "--mf-weight"),
    ("mf-accuracy-gate-2", ["--memory-forcing", "--mf-accuracy-gate", "2"],
     "--mf-accuracy-gate"),
    ("mf-update-gate-negative", ["--memory-forcing", "--mf-update-gate", "-1"],
     "--mf-update-gate"),
    ("mf-weight-nan", ["--memory-forcing", "--mf-weight", "nan"], "--mf-weight"),
    ("keep-checkpoints-0", ["--keep-checkpoints", "0"], "--keep-checkpoints"),
    ("on-divergence-unknown", ["--on-divergence", "retry"], "--on-divergence"),
    ("rollback-factor-1", ["--rollback-lr-factor", "1"], "--rollback-lr-factor"),
    ("max-rollbacks-0", ["--max-rollbacks", "0"], "--max-rollbacks"),
    ("max-loss-ratio-half", ["--max-loss-ratio", "0.5"], "--max-loss-ratio"),
    ("max-loss-ratio-word", ["--max-loss-ratio", "big"], "--max-loss-ratio"),
    ("prerecall-0", ["-l", "0"], "--prerecall-length"),
    ("recall-0", ["-k", "0"], "--recall-length"),
    ("recall-longer", ["-l", "3", "-k", "5"], "--recall-length"),
    ("binarize-unknown", ["--binarize", "otsu"], "--binarize"),
    ("data-dir-missing", ["--data-dir", "/no/such/folder"], "--data-dir"),
    ("unknown-flag", ["--stepz", "3"], "--stepz"),
    ("memory-option-unknown", ["--memory-option", "foo=1"], "--memory-option: unknown option"),
    ("memory-option-type", ["--model", "dnc", "--memory-option", "word_size=big"],
     "--memory-option: word_size expects int"),
    ("memory-option-no-value", ["--memory-option", "num_heads"], "expected NAME=VALUE"),
    ("memory-option-and-its-flag", ["--num-heads", "2", "--memory-option", "num_heads=3"],
     "--memory-option num_heads is also set"),
    ("memory-option-vrnn", ["--model", "vrnn", "--memory-option", "num_heads=2"],
     "accepted: none"),
    ("task-option-unknown", ["--task-option", "perod=5"], "--task-option: unknown option"),
    ("task-option-and-its-flag", ["--task-option", "recall_length=2"], "both given"),
    ("task-option-range", ["--task-option", "prerecall_length=0", "-l", "4"], "both given"),
]

#: train cases that need another task than perfect recall: (id, task and argv, contains)
TRAIN_TASKS = [
    ("task-unknown", ["recall"], "TASK"),
    ("dynamic-dependency-short", ["dynamic-dependency", "-l", "5"], "--prerecall-length"),
    ("one-shot-no-omniglot", ["one-shot", "--data-dir", "{empty}"], "omniglot"),
    ("navigation-recall-length", ["navigation", "-k", "3"], "--recall-length"),
]

EVALUATE = [
    ("particles-0", ["--particles", "0"], "--particles"),
    ("particles-word", ["--particles", "ten"], "--particles"),
    ("ess-threshold-2", ["--ess-threshold", "2"], "--ess-threshold"),
    ("ess-threshold-nan", ["--ess-threshold", "nan"], "--ess-threshold"),
    ("outliers-negative", ["--outliers", "-1"], "--outliers"),
    ("outliers-smc", ["--outliers", "1", "--bound", "smc"], "--outliers"),
    ("chunk-size-0", ["--chunk-size", "0"], "--chunk-size"),
    ("sequences-0", ["--sequences", "0"], "--sequences"),
    ("bound-unknown", ["--bound", "fivo"], "--bound"),
    ("resampling-unknown", ["--resampling", "residual"], "--resampling"),
    ("device-tpu", ["--device", "tpu"], "--device"),
    ("threads-0", ["--threads", "0"], "--threads"),
    ("seed-negative", ["--seed", "-1"], "--seed"),
    ("out-folder", ["--out", "{folder}"], "--out"),
    ("data-dir-missing", ["--data-dir", "/no/such/folder"], "--data-dir"),
]

SAMPLE = [
    ("observe-negative", ["--observe", "-1"], "--observe"),
    ("observe-too-long", ["--observe", "99"], "--observe"),
    ("num-0", ["--num", "0"], "--num"),
    ("device-tpu", ["--device", "tpu"], "--device"),
    ("threads-0", ["--threads", "0"], "--threads"),
    ("seed-negative", ["--seed", "-1"], "--seed"),
    ("out-format", ["--out", "{tmp}/samples.xyz"], "--out"),
    ("out-empty", ["--out", ""], "--out"),
    ("out-folder", ["--out", "{folder}"], "--out"),
]

PREVIEW = [
    ("task-unknown", ["recall", "--out", "{tmp}/p.png"], "TASK"),
    ("n-0", ["perfect-recall", "--out", "{tmp}/p.png", "--n", "0"], "--n"),
    ("split-unknown", ["perfect-recall", "--out", "{tmp}/p.png", "--split", "dev"], "--split"),
    ("seed-negative", ["perfect-recall", "--out", "{tmp}/p.png", "--seed", "-1"], "--seed"),
    ("binarize-unknown", ["perfect-recall", "--out", "{tmp}/p.png", "--binarize", "x"],
     "--binarize"),
    ("out-empty", ["perfect-recall", "--out", ""], "--out"),
    ("prerecall-0", ["perfect-recall", "--out", "{tmp}/p.png", "-l", "0"],
     "--prerecall-length"),
    ("data-dir-file", ["perfect-recall", "--out", "{tmp}/p.png", "--data-dir", "{file}"],
     "--data-dir"),
]


def _fill(argv, tmp_path: Path) -> list[str]:
    (tmp_path / "folder").mkdir(exist_ok=True)
    (tmp_path / "empty").mkdir(exist_ok=True)
    (tmp_path / "file").write_text("not a folder")
    places = {"tmp": tmp_path, "folder": tmp_path / "folder", "empty": tmp_path / "empty",
              "file": tmp_path / "file"}
    return [a.format(**places) for a in argv]


def assert_one_line_error(capsys, argv, contains: str, status: int = 2) -> str:
    capsys.readouterr()
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1, err
    line = errors[0]
    assert line.startswith("pgtm"), line
    assert "Traceback" not in "\n".join(err)
    assert contains.lower() in line.lower(), line
    return line


def _train_argv(tmp_path, extra, task=("perfect-recall", "-l", "4", "-k", "2")):
    return ["train", *task, "--out", str(tmp_path / "out"), *TINY, *extra]


@pytest.mark.parametrize("extra, contains", [c[1:] for c in TRAIN], ids=[c[0] for c in TRAIN])
def test_train_option(tmp_path, capsys, extra, contains):
    assert_one_line_error(capsys, _train_argv(tmp_path, _fill(extra, tmp_path)), contains)
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


@pytest.mark.parametrize("task, contains", [c[1:] for c in TRAIN_TASKS],
                         ids=[c[0] for c in TRAIN_TASKS])
def test_train_task(tmp_path, capsys, task, contains):
    argv = ["train", *_fill(task, tmp_path), "--out", str(tmp_path / "out"), *TINY]
    assert_one_line_error(capsys, argv, contains)


@pytest.mark.parametrize("out, contains", [
    ("", "--out"), ("{file}", "--out"), ("/proc/pgtm-run", "--out"),
    ("{file}/run", "--out"),
], ids=["empty", "a-file", "under-proc", "under-a-file"])
def test_train_out(tmp_path, capsys, out, contains):
    argv = ["train", "perfect-recall", "--out", _fill([out], tmp_path)[0], *TINY]
    assert_one_line_error(capsys, argv, contains)


def test_train_out_read_only(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    assert_one_line_error(capsys, ["train", "perfect-recall", "--out",
                                   str(tmp_path / "ro" / "run"), *TINY], "--out")


@pytest.mark.parametrize("edit", sorted(RUN_EDITS))
@pytest.mark.parametrize("command", ["evaluate", "sample", "train"])
def test_a_damaged_run_folder(trained, tmp_path, capsys, command, edit):
    run = _run_copy(trained, tmp_path, RUN_EDITS[edit])
    if command == "train":
        if edit in ("no-checkpoint", "corrupt-run-json", "unknown-model-in-run-json",
                    "checkpoint-of-another-model"):
            pytest.skip("train rebuilds run.json and starts afresh without a checkpoint")
        argv = ["train", "perfect-recall", "-l", "4", "-k", "2", "--model", "vrnn", "--out",
                str(run), *TINY[:-6], "--steps", "4"]
    elif command == "evaluate":
        argv = ["evaluate", str(run), "--particles", "2", "--sequences", "2"]
    else:
        argv = ["sample", str(run), "--out", str(tmp_path / "s.png")]
    contains = "run.json" if "json" in edit else "checkpoint"
    if edit == "checkpoint-of-another-model":
        contains = "holds another model"
    assert_one_line_error(capsys, argv, contains)
    assert not Path("/tmp/pgtm-pwned").exists()


@pytest.mark.parametrize("other, differs", [
    (["--model", "dnc"], "model: 'vrnn' there, 'dnc' now"),
    (["--latent-size", "6"], "--latent-size: 4 there, 6 now"),
    (["-l", "5"], "--prerecall-length: 4 there, 5 now"),
], ids=["model", "latent-size", "task-length"])
def test_resuming_with_other_options_says_what_differs(trained, tmp_path, capsys, other,
                                                       differs):
    run = _run_copy(trained, tmp_path, lambda run: (run / "results.json").unlink())
    argv = ["train", "perfect-recall", "-l", "4", "-k", "2", "--model", "vrnn", "--out",
            str(run), *TINY[:-6], "--steps", "4", *other]
    line = assert_one_line_error(capsys, argv, differs)
    assert "--restart" in line


@pytest.mark.parametrize("extra, contains", [c[1:] for c in EVALUATE],
                         ids=[c[0] for c in EVALUATE])
def test_evaluate_option(trained, tmp_path, capsys, extra, contains):
    argv = ["evaluate", str(trained), "--particles", "2", "--sequences", "2",
            *_fill(extra, tmp_path)]
    assert_one_line_error(capsys, argv, contains)


@pytest.mark.parametrize("run", ["/no/such/run", "{file}", "{empty}"],
                         ids=["missing", "a-file", "not-a-run"])
@pytest.mark.parametrize("command", ["evaluate", "sample"])
def test_run_dir(tmp_path, capsys, command, run):
    argv = [command, _fill([run], tmp_path)[0]]
    if command == "sample":
        argv += ["--out", str(tmp_path / "s.png")]
    assert_one_line_error(capsys, argv, "RUN_DIR")


@pytest.mark.parametrize("extra, contains", [c[1:] for c in SAMPLE], ids=[c[0] for c in SAMPLE])
def test_sample_option(trained, tmp_path, capsys, extra, contains):
    filled = _fill(extra, tmp_path)
    argv = ["sample", str(trained), *(filled if "--out" in filled else
                                      ["--out", str(tmp_path / "s.png"), *filled])]
    assert_one_line_error(capsys, argv, contains)


@pytest.mark.parametrize("extra, contains", [c[1:] for c in PREVIEW],
                         ids=[c[0] for c in PREVIEW])
def test_data_preview_option(tmp_path, capsys, extra, contains):
    assert_one_line_error(capsys, ["data", "preview", *_fill(extra, tmp_path)], contains)


def test_cuda_without_a_gpu_is_one_line(trained, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    for argv in (_train_argv(tmp_path, ["--device", "cuda"]),
                 ["evaluate", str(trained), "--device", "cuda"],
                 ["sample", str(trained), "--out", str(tmp_path / "s.png"), "--device", "cuda"]):
        assert_one_line_error(capsys, argv, "--device")


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    argv = ["train", "perfect-recall", "-l", "4", "-k", "2", "--model", "vrnn", "--out",
            str(run), *TINY[:-6], "--steps", "2", "--checkpoint-every", "1"]
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    line = assert_one_line_error(capsys, argv, "is the disk full")
    assert "checkpoint.pt" in line
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 1
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["--debug", "evaluate", "/no/such/run"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_an_unexpected_failure_is_one_line_with_a_hint(monkeypatch, capsys, tmp_path):
    import pgtm.cli.sample

    def broken(args):
        raise KeyError("internal")

    monkeypatch.setattr(pgtm.cli.sample, "_cmd_sample", broken)
    line = assert_one_line_error(capsys, ["sample", "x", "--out", "y.png"], "--debug", status=1)
    assert "KeyError" in line


def test_an_unexpected_failure_with_a_long_message_is_cut(monkeypatch, capsys):
    import pgtm.cli.sample

    def compiler_output(args):  # e.g. inductor's error, which carries the whole g++ output
        raise RuntimeError("warning: overflow\n" * 5000)

    monkeypatch.setattr(pgtm.cli.sample, "_cmd_sample", compiler_output)
    line = assert_one_line_error(capsys, ["sample", "x", "--out", "y.png"], "--debug", status=1)
    assert len(line) < 600 and "(89,999 characters)" in line


# ----------------------------------------------------------------------------------------------
# The API: a ValueError whose single line names the argument


def _api_cases():
    from pgtm.data import load_images
    from pgtm.inference.evaluate import evaluate
    from pgtm.inference.smc import smc
    from pgtm.inference.train import TrainConfig
    from pgtm.models import build_gtm
    from pgtm.tasks import make_task

    def gtm():
        return build_gtm("vrnn", frame_shape=(1, 1, 3), sequence_length=3, latent_size=2,
                         controller_size=4)

    x = torch.bernoulli(torch.full((2, 3, 1, 1, 3), 0.5))
    mask = torch.ones(2, 3, dtype=torch.bool)
    holes = mask.clone()
    holes[:, 1] = False
    cases = [
        *[(f"TrainConfig-{f}-{v!r}", lambda f=f, v=v: TrainConfig(**{f: v}), f) for f, v in [
            ("steps", 0), ("steps", 1.5), ("steps", True), ("batch_size", 0),
            ("learning_rate", 0.0), ("learning_rate", math.nan), ("clip_norm", -1.0),
            ("lr_decay", 0.0), ("lr_decay", 1.5), ("elbo", "renyi"), ("num_particles", 0),
            ("kl_anneal_steps", -1), ("kl_anneal_start", 2.0), ("device", "tpu"),
            ("seed", -1), ("eval_every", 0), ("checkpoint_every", 0), ("log_every", 0),
            ("out_dir", 3), ("keep_checkpoints", 0), ("compile", "yes"),
        ]],
        ("make_task-unknown", lambda: make_task("recall"), "task"),
        ("make_task-option", lambda: make_task("perfect-recall", width=3), "width"),
        ("make_task-l", lambda: make_task("perfect-recall", prerecall_length=0),
         "prerecall_length"),
        ("make_task-k", lambda: make_task("perfect-recall", prerecall_length=3,
                                          recall_length=4), "recall_length"),
        ("make_task-binarize", lambda: make_task("perfect-recall", binarize="otsu"), "binarize"),
        ("make_task-dataset", lambda: make_task("perfect-recall", dataset="cifar"), "dataset"),
        ("make_task-data_dir", lambda: make_task("perfect-recall", data_dir="/no/such"),
         "data_dir"),
        ("make_task-copy-width", lambda: make_task("copy", width=0), "width"),
        ("make_task-grid", lambda: make_task("navigation", grid_size=0), "grid_size"),
        ("load_images-name", lambda: load_images("cifar", "train"), "name must be one of"),
        ("load_images-split", lambda: load_images("mnist", "dev"), "split"),
        ("build_gtm-memory", lambda: build_gtm("lstm", frame_shape=(1, 28, 28),
                                               sequence_length=3), "memory"),
        ("build_gtm-latent", lambda: build_gtm("vrnn", frame_shape=(1, 28, 28),
                                               sequence_length=3, latent_size=0),
         "latent_size"),
        ("build_gtm-network", lambda: build_gtm("vrnn", frame_shape=(1, 1, 3),
                                                sequence_length=3, network="conv"), "network"),
        ("build_gtm-prior", lambda: build_gtm("vrnn", frame_shape=(1, 28, 28),
                                              sequence_length=3, prior="laplace"), "prior"),
        ("build_gtm-likelihood", lambda: build_gtm("vrnn", frame_shape=(1, 28, 28),
                                                   sequence_length=3, likelihood="poisson"),
         "likelihood"),
        ("build_gtm-action", lambda: build_gtm("vrnn", frame_shape=(1, 28, 28),
                                               sequence_length=3, action_size=-1),
         "action_size"),
        ("build_gtm-frame", lambda: build_gtm("vrnn", frame_shape=(0, 28, 28),
                                              sequence_length=3), "frame_shape"),
        ("build_gtm-heads-vrnn", lambda: build_gtm("vrnn", frame_shape=(1, 28, 28),
                                                   sequence_length=3, num_heads=3),
         "num_heads"),
        ("evaluate-particles", lambda: (g := gtm(), evaluate(g.model, g.guide, x, None, mask,
                                                             num_particles=0)), "num_particles"),
        ("evaluate-holes", lambda: (g := gtm(), evaluate(g.model, g.guide, x, None, holes,
                                                         num_particles=2)), "mask"),
        ("evaluate-frames", lambda: (g := gtm(), evaluate(g.model, g.guide, x * 0.5, None,
                                                          mask, num_particles=2)), "x"),
        ("evaluate-shape", lambda: (g := gtm(), evaluate(g.model, g.guide, x[0], None, mask,
                                                         num_particles=2)), "shape [B, T]"),
        ("evaluate-frame-shape", lambda: (g := gtm(), evaluate(g.model, g.guide, x[..., :2],
                                                               None, mask, num_particles=2)),
         "x must have shape [B, T, 1, 1, 3]"),
        ("smc-particles", lambda: smc(gtm(), x, None, mask, 0), "num_particles"),
        ("smc-resampling", lambda: smc(gtm(), x, None, mask, 2, resampling="residual"),
         "resampling"),
        ("smc-ess", lambda: smc(gtm(), x, None, mask, 2, ess_threshold=2.0), "ess_threshold"),
        ("generate-x", lambda: gtm().generate(3, x=x[..., :2], observed_steps=1), "x"),
        ("generate-observed", lambda: gtm().generate(3, x=x, observed_steps=4),
         "observed_steps"),
        ("generate-length", lambda: gtm().generate(0), "length"),
    ]
    return cases


API = _api_cases()


@pytest.mark.parametrize("call, contains", [c[1:] for c in API], ids=[c[0] for c in API])
def test_api_argument(call, contains):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and contains.lower() in message.lower(), message
