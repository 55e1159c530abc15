"""``plstm train <experiment> [options]``: argument parsing, option resolution (command line >
resumed run > ``PLSTM_TRAIN_*`` environment > experiment default > global default) and the run.

Also runnable as ``python -m training.cli`` (e.g. under ``torchrun``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "PLSTM_TRAIN_"
METHODS = ("parallel", "recurrent", "chunkwise", "fused")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError


_positive_int.__name__ = "positive integer"
_non_negative_int.__name__ = "non-negative integer"
_positive_float.__name__ = "positive number"
_non_negative_float.__name__ = "non-negative number"
_bool.__name__ = "boolean (1/0/true/false)"


@dataclass(frozen=True)
class Option:
    """One ``plstm train`` option. ``per_run``: part of the run's definition, restored on
    ``--resume``; otherwise it belongs to one invocation (device, workers, ...)."""

    flag: str
    type: Callable[[str], Any] | None
    help: str
    default: Any = None
    per_run: bool = True
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    boolean: bool = False

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


GROUPS: dict[str, list[Option]] = {
    "optimisation": [
        Option("--epochs", _positive_int, "training epochs (default: per experiment)"),
        Option(
            "--batch-size",
            _positive_int,
            "global batch size, split evenly over torchrun processes (default: per experiment)",
        ),
        Option("--lr", _positive_float, "peak learning rate of AdamW (default: per experiment)"),
        Option(
            "--weight-decay",
            _non_negative_float,
            "AdamW weight decay on matrices; biases and norms get none (default: per experiment)",
        ),
        Option(
            "--warmup-epochs",
            _non_negative_float,
            "linear warmup length in epochs, then cosine decay per step (default: per experiment)",
        ),
        Option(
            "--warmup-steps",
            _non_negative_int,
            "warmup length in optimizer steps; overrides --warmup-epochs",
        ),
        Option(
            "--min-lr-factor",
            _non_negative_float,
            "the cosine ends at this fraction of the peak lr (default: 0.001, paper D.2)",
            default=1e-3,
        ),
        Option(
            "--grad-clip",
            _non_negative_float,
            "clip the global gradient norm to this value; 0 = off (default: 1.0)",
            default=1.0,
        ),
        Option(
            "--patience",
            _positive_int,
            "stop after N epochs without a better validation score (the schedule still spans "
            "--epochs); default: every epoch runs",
            metavar="N",
        ),
        Option(
            "--seed",
            _non_negative_int,
            "seed of the model init, data order and dropout (default: 0)",
            default=0,
        ),
        Option(
            "--amp",
            _bool,
            "bf16 autocast (default: on with CUDA, off on the CPU)",
            boolean=True,
        ),
        Option(
            "--cuda-graph",
            _bool,
            "replay forward + backward from CUDA graphs (default: on for image experiments on "
            "one GPU; about 2x the eager speed for pLSTM-Vis-T on an H100)",
            boolean=True,
        ),
    ],
    "model": [
        Option(
            "--model-size",
            None,
            "arrow experiments: paper size T (192 wide, 3 heads), S (384, 6) or B (768, 12), "
            "depth 12 (default: t)",
            choices=("t", "s", "b"),
        ),
        Option("--dim", _positive_int, "model width (overrides the size preset)"),
        Option(
            "--depth",
            _non_negative_int,
            "number of blocks / layers; arrow experiments take 0 (stem + pooling + head, no "
            "blocks: the no-mixer control)",
        ),
        Option("--heads", _positive_int, "attention / pLSTM heads (not GIN)"),
        Option(
            "--method",
            None,
            "pLSTM op implementation: parallel | recurrent | chunkwise | fused (vision), "
            "parallel | recurrent (graphs); pLSTM experiments only (default: parallel)",
            choices=METHODS,
        ),
        Option("--patch-size", _positive_int, "arrow experiments: patch size in px (default: 8)"),
        Option(
            "--stem",
            None,
            "arrow experiments: token embedding, conv (stride-2 3x3 convolutions with a "
            "per-pixel RMSNorm; learns the task), conv-bn (the same with BatchNorm) or patch "
            "(the paper's linear patch projection) (default: conv-bn)",
            choices=("conv", "conv-bn", "patch"),
        ),
        Option(
            "--head-norm",
            None,
            "arrow experiments: batch = BatchNorm of the pooled features before the linear "
            "head, token-batch = BatchNorm of every token before pooling, none = the paper's "
            "plain head (default: batch)",
            choices=("batch", "token-batch", "none"),
        ),
        Option(
            "--pooling",
            None,
            "arrow experiments: corners = the four corner tokens concatenated (paper Table 4), "
            "mean = the mean over all tokens (default: corners for pLSTM, mean for the ViT)",
            choices=("corners", "mean"),
        ),
        Option(
            "--dropout",
            _non_negative_float,
            "graph experiments: dropout in blocks and readout (default: 0)",
        ),
        Option(
            "--edge-features",
            _bool,
            "graph experiments: give the model the bond (edge-label) features; off = plain GIN "
            "messages for gin-xu (default: on)",
            boolean=True,
        ),
    ],
    "data": [
        Option(
            "--train-samples",
            _positive_int,
            "arrow: training images generated (default 100000); graphs: use the first N",
        ),
        Option(
            "--val-samples",
            _positive_int,
            "arrow: validation images (default 5120); graphs: use the first N",
        ),
        Option(
            "--test-samples",
            _non_negative_int,
            "arrow: test and extrapolation images each (default 10240); graphs: the first N "
            "test graphs; 0 = no final test evaluation",
        ),
        Option(
            "--arrow-scale",
            _positive_float,
            "arrow experiments: pixel scale of the paper geometry; 0.5 = 96 px train / "
            "192 px extrapolation, 1.0 = the paper's 192 / 384 px (default: 0.5)",
        ),
        Option(
            "--cache-data",
            _bool,
            "arrow experiments: render the training and validation images once into memory "
            "(in parallel; ~0.9 GB per 100,000 96 px images) instead of per item (default: on)",
            boolean=True,
            per_run=False,
        ),
        Option(
            "--standardize",
            _bool,
            "arrow experiments: the model standardises pixels with the training images' mean "
            "and std, recorded in its config (default: on)",
            boolean=True,
        ),
        Option(
            "--task",
            None,
            "graph experiments: classification (low/medium/high) or regression "
            "(log-solubility; solubility only) (default: classification)",
            choices=("classification", "regression"),
        ),
        Option(
            "--split",
            None,
            "solubility experiments: random = the SDF files' train / test split with "
            "duplicates removed, sdf = the same with the duplicates (the split of the shipped "
            "solubility/1), scaffold = MoleculeNet's Bemis-Murcko scaffold split 80/10/10 of "
            "both files (default: random)",
            choices=("random", "sdf", "scaffold"),
        ),
        Option(
            "--split-seed",
            _non_negative_int,
            "graph experiments: seed of the stratified train/val(/test) split (default: 0)",
        ),
        Option(
            "--fold",
            _non_negative_int,
            "TU experiments: 10-fold cross-validation as in paper D.4: fold K (0..9) of a "
            "stratified partition is the test set, fold K+1 the validation set, the rest the "
            "training set (default: one stratified 80/10/10 split)",
            metavar="K",
        ),
        Option("--tu-root", str, "TU experiments: folder with NAME_A.txt etc.", metavar="DIR"),
        Option("--tu-name", str, "TU experiments: data set NAME (default: the folder's name)"),
    ],
    "run": [
        Option(
            "--out",
            str,
            "run directory: metrics.jsonl, curves.png, run.json, best/ (checkpoint for the "
            "model server), last/ (resumable state) (default: runs/<experiment>-seed<seed>)",
            per_run=False,
            metavar="DIR",
        ),
        Option(
            "--max-steps",
            _positive_int,
            "stop after this many optimizer steps (the schedule still spans --epochs); "
            "for smoke tests and planned interruptions (not restored by --resume)",
            per_run=False,
        ),
        Option(
            "--device",
            str,
            "auto | cpu | cuda | cuda:N; under torchrun each process takes cuda:LOCAL_RANK "
            "(default: auto)",
            default="auto",
            per_run=False,
        ),
        Option(
            "--workers",
            _non_negative_int,
            "DataLoader worker processes per training process (default: 4 for arrow, 0 for graphs)",
            per_run=False,
        ),
        Option(
            "--eval-batch-size",
            _positive_int,
            "batch size per process for evaluation (default: the training batch per process)",
            per_run=False,
        ),
        Option(
            "--log-every",
            _non_negative_int,
            "also write a metrics.jsonl row every N steps; 0 = per epoch only (default: 0)",
            default=0,
        ),
        Option(
            "--metrics-port",
            _non_negative_int,
            "serve Prometheus metrics on this port (rank 0 only); 0 = off (default: 0)",
            default=0,
            per_run=False,
        ),
        Option(
            "--metrics-host",
            str,
            "address the Prometheus exporter binds (default: 0.0.0.0)",
            default="0.0.0.0",
            per_run=False,
        ),
        Option(
            "--export-dtype",
            None,
            "dtype of the exported checkpoint weights (default: fp32)",
            default="fp32",
            choices=("fp32", "bf16"),
        ),
        Option(
            "--progress",
            _bool,
            "progress bars on rank 0 (default: only when stderr is a terminal)",
            per_run=False,
            boolean=True,
        ),
        Option(
            "--weights-hash-dir",
            str,
            "every process writes the sha256 of its final weights to DIR/rank<R>.sha256 "
            "(checks that DDP replicas agree)",
            per_run=False,
            metavar="DIR",
        ),
    ],
}
OPTIONS: dict[str, Option] = {o.dest: o for group in GROUPS.values() for o in group}


def _description() -> str:
    from training.experiments import EXPERIMENTS

    width = max(len(n) for n in EXPERIMENTS)
    lines = [
        "Train a model of an experiment and write a checkpoint the model server can load.",
        "",
        "experiments:",
    ]
    for name, exp in EXPERIMENTS.items():
        d = exp.defaults
        lines.append(f"  {name:<{width}}  {exp.summary}")
        lines.append(
            f"  {'':<{width}}  defaults: {d['epochs']} epochs, batch {d['batch_size']}, "
            f"lr {d['lr']:g}, weight decay {d['weight_decay']:g}, "
            f"{d['warmup_epochs']:g} warmup epoch(s)"
        )
    return "\n".join(lines)


EPILOG = f"""\
Every option can also be set by an environment variable {ENV_PREFIX}<OPTION> (upper case,
dashes as underscores, e.g. {ENV_PREFIX}BATCH_SIZE=64, {ENV_PREFIX}AMP=0); the command line
wins. With --resume DIR the run's saved options are used (experiment, model, data, optimizer,
seed, epochs); options given on the command line replace them.

Multi-GPU: torchrun --nproc-per-node 4 -m training.cli arrow-plstm --out runs/a
(or `plstm train` as the torchrun program) runs DistributedDataParallel with the same options.

Outputs in --out: metrics.jsonl, curves.png, run.json, best/ (config.json, model.safetensors,
metrics.json with validation, test (and extrapolation) results), last/ (resumable state).
"""


def build_parser(prog: str = "plstm train") -> argparse.ArgumentParser:
    """The parser of ``plstm train``; every option's default is None here (resolved later)."""
    from training.experiments import EXPERIMENTS

    parser = argparse.ArgumentParser(
        prog=prog,
        description=_description(),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "experiment",
        nargs="?",
        choices=sorted(EXPERIMENTS),
        metavar="EXPERIMENT",
        help=f"one of: {', '.join(EXPERIMENTS)} (may be left out with --resume)",
    )
    parser.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in DIR from DIR/last (same weights as an uninterrupted run)",
    )
    for title, options in GROUPS.items():
        group = parser.add_argument_group(title)
        for o in options:
            text = f"{o.help} [env {o.env}]"
            if o.boolean:
                group.add_argument(
                    o.flag, action=argparse.BooleanOptionalAction, default=None, help=text
                )
            else:
                group.add_argument(
                    o.flag,
                    type=o.type,
                    choices=o.choices,
                    default=None,
                    metavar=o.metavar,
                    help=text,
                )
    return parser


def _environment() -> dict[str, Any]:
    """Options from ``PLSTM_TRAIN_*`` variables; ValueError naming a bad one."""
    values: dict[str, Any] = {}
    for o in OPTIONS.values():
        text = os.environ.get(o.env)
        if text is None or text == "":
            continue
        try:
            value = o.type(text) if o.type is not None else text
        except ValueError:
            kind = getattr(o.type, "__name__", "value")
            raise ValueError(
                f"environment variable {o.env}: expected a {kind}, got {text!r}"
            ) from None
        if o.choices is not None and value not in o.choices:
            raise ValueError(
                f"environment variable {o.env} must be one of {o.choices}, got {text!r}"
            )
        values[o.dest] = value
    return values


RUN_FILE = "run.json"


def resolve(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """(experiment, every option) from the command line, the resumed run, the environment and
    the defaults; ValueError for inconsistent input."""
    from training.experiments import get_experiment

    explicit = {k: v for k, v in vars(args).items() if v is not None and k in OPTIONS}
    saved: dict[str, Any] = {}
    experiment = args.experiment
    if args.resume is not None:
        run_file = Path(args.resume) / RUN_FILE
        if not run_file.is_file():
            raise ValueError(f"--resume {args.resume}: no {RUN_FILE} there (not a run directory)")
        document = json.loads(run_file.read_text())
        if experiment is not None and experiment != document["experiment"]:
            raise ValueError(
                f"--resume {args.resume} is a {document['experiment']!r} run, not {experiment!r}"
            )
        experiment = document["experiment"]
        saved = {
            k: v for k, v in document["options"].items() if k in OPTIONS and OPTIONS[k].per_run
        }
        if "out" in explicit and Path(explicit["out"]).resolve() != Path(args.resume).resolve():
            raise ValueError("--out must be left out (or equal --resume) when resuming")
        explicit["out"] = args.resume
    if experiment is None:
        raise ValueError("the experiment is required (or --resume DIR)")
    exp = get_experiment(experiment)
    defaults = {o.dest: o.default for o in OPTIONS.values()}
    defaults.update(exp.defaults)
    defaults["workers"] = 4 if exp.family == "arrow" else 0
    options = {**defaults, **_environment(), **saved, **explicit}
    if options["out"] is None:
        options["out"] = str(Path("runs") / f"{experiment}-seed{options['seed']}")
    return experiment, options


def experiment_options(options: dict[str, Any]) -> Any:
    """The :class:`training.experiments.ExperimentOptions` part of resolved options."""
    from training.experiments import ExperimentOptions

    return ExperimentOptions(**{f.name: options[f.name] for f in fields(ExperimentOptions)})


def _print(*parts: Any) -> None:
    print(*parts, flush=True)


def run(experiment: str, options: dict[str, Any], resume: bool) -> int:
    """Build the experiment and train it (under torchrun: this process's share)."""
    import torch

    from training.distributed import (
        cleanup_distributed,
        detect_dist_env,
        init_distributed,
        process_device,
    )
    from training.experiments import build_run
    from training.loop import LAST_DIR, TrainConfig, Trainer
    from training.monitor import TrainingMetrics

    out = Path(options["out"])
    if not resume and (out / LAST_DIR).exists():
        raise ValueError(f"--out {out} already holds a run: use --resume {out} or another --out")
    env = detect_dist_env()
    device = process_device(options["device"], env)
    config = TrainConfig(
        epochs=options["epochs"],
        batch_size=options["batch_size"],
        lr=options["lr"],
        weight_decay=options["weight_decay"],
        warmup_epochs=options["warmup_epochs"],
        warmup_steps=options["warmup_steps"],
        min_lr_factor=options["min_lr_factor"],
        grad_clip=options["grad_clip"] or None,
        seed=options["seed"],
        max_steps=options["max_steps"],
        amp=options["amp"],
        cuda_graph=options["cuda_graph"],
        workers=options["workers"],
        log_every=options["log_every"],
        export_dtype=options["export_dtype"],
        eval_batch_size=options["eval_batch_size"],
        progress=options["progress"],
        patience=options["patience"],
    )
    torch.manual_seed(options["seed"])
    spec = build_run(experiment, experiment_options(options))
    init_distributed(device)
    metrics = None
    trainer: Trainer | None = None
    try:
        hash_dir = options["weights_hash_dir"]
        trainer = Trainer(
            spec,
            config,
            out,
            device=device,
            env=env,
            metrics=None,
            run_config={"experiment": experiment, "options": options},
            weights_hash_file=None
            if hash_dir is None
            else Path(hash_dir) / f"rank{env.rank}.sha256",
        )
        if env.is_main:
            params = sum(p.numel() for p in spec.model.parameters())
            _print(
                f"{experiment}: {spec.model_name} ({params:,} parameters) on {device}, "
                f"{env.world_size} process(es), {len(spec.train_set)} train / "
                f"{len(spec.val_set)} val samples, {trainer.steps_per_epoch} steps per epoch "
                f"-> {out}"
            )
            if options["metrics_port"]:
                metrics = TrainingMetrics(experiment, spec.model_name)
                port = metrics.serve(options["metrics_port"], options["metrics_host"])
                trainer.metrics = metrics
                _print(f"Prometheus metrics on http://{options['metrics_host']}:{port}/metrics")
        result = trainer.fit(resume=resume)
        if env.is_main:
            _print(f"best validation score {result.best_score:.4f} at epoch {result.best_epoch}")
            for name, entry in result.metrics.items():
                values = {k: entry[k] for k in ("accuracy", "rmse", "loss") if k in entry}
                shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if v is not None)
                _print(f"  {name}: {shown}")
            _print(f"checkpoint: {result.best_dir}")
    finally:
        if metrics is not None:
            metrics.close()
        if trainer is not None:
            trainer.close()
        cleanup_distributed()
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "plstm train") -> int:
    """Entry point of ``plstm train``; returns the exit status (2 for bad arguments)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        experiment, options = resolve(args)
        from training.experiments import check_options, get_experiment

        check_options(get_experiment(experiment), experiment_options(options))
    except ValueError as exc:
        parser.error(str(exc))
    try:
        return run(experiment, options, resume=args.resume is not None)
    except ValueError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(prog="python -m training.cli"))
