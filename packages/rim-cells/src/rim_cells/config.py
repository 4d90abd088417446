"""Configuration dataclasses of the ``rim-cells`` commands (no torch import here).

Every field's docstring is its ``--help`` text. Nested classes give dotted flags, e.g.
``rim-cells seqmnist train --model.num-units 6 --model.k-active 4 --optim.lr 1e-3``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import tyro

from compkit_utils.devices import DeviceName
from compkit_utils.errors import UserError
from compkit_utils.validate import InputFile, OutputDir, Range

Positive = Annotated[int, Range(1)]
"""An integer of at least 1."""
Dropout = Annotated[float, Range(0, 1, hi_open=True)]
"""A dropout probability in [0, 1)."""


@dataclasses.dataclass(frozen=True)
class RIMConfig:
    """One RIM layer: units, active units, unit cell, attention sizes and dropouts.

    The one definition of these settings, nested (without a flag prefix of its own) in the
    ``model`` settings of ``seqmnist train`` and ``minigrid train``: the flags read
    ``--model.num-units``, ``--model.k-active`` and so on.
    """

    num_units: Positive = 6
    """RIM units N (the paper's K_t)."""
    k_active: Positive = 4
    """Active RIM units per step k (the paper's K_a)."""
    hidden_size: Positive = 100
    """Hidden features per RIM unit H (total width N·H)."""
    rnn_cell: Literal["LSTM", "GRU"] = "LSTM"
    """Recurrent cell inside each RIM unit."""
    activation: Literal["null_attention", "raw_score"] = "null_attention"
    """Active-unit rule: null_attention = the paper's (least attention on the null input),
    raw_score = the community code's (largest raw score on the real input)."""
    input_key_size: Positive = 64
    """Input-attention key/query width."""
    input_value_size: Positive = 400
    """Input-attention value width (the units' cell input)."""
    num_input_heads: Positive = 1
    """Input-attention heads."""
    input_dropout: Dropout = 0.1
    """Dropout on input-attention probabilities."""
    comm_key_size: Positive = 32
    """Communication key/query width."""
    num_comm_heads: Positive = 4
    """Communication heads (the community MNIST script accidentally ran with 1)."""
    comm_dropout: Dropout = 0.1
    """Dropout on communication-attention probabilities."""

    def check(self) -> None:
        """At most N units can be active (the flags are those of the ``model`` settings)."""
        if self.k_active > self.num_units:
            raise UserError(
                f"--model.k-active ({self.k_active}) must be at most --model.num-units "
                f"({self.num_units})"
            )

    @property
    def width(self) -> int:
        """Total hidden width N·H of the layer."""
        return self.num_units * self.hidden_size

    def cell_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `rim_cells.RIMCell` and `rim_cells.RIM` for this layer.

        Everything after the positional ``device, input_size``: sizes, ``k``, the unit cell,
        attention sizes and dropouts (queries are as wide as keys).
        """
        return {
            "hidden_size": self.hidden_size,
            "num_units": self.num_units,
            "k": self.k_active,
            "rnn_cell": self.rnn_cell,
            "input_key_size": self.input_key_size,
            "input_value_size": self.input_value_size,
            "input_query_size": self.input_key_size,
            "num_input_heads": self.num_input_heads,
            "input_dropout": self.input_dropout,
            "comm_key_size": self.comm_key_size,
            "comm_query_size": self.comm_key_size,
            "num_comm_heads": self.num_comm_heads,
            "comm_dropout": self.comm_dropout,
            "activation": self.activation,
        }


RIM_FIELDS = tuple(f.name for f in dataclasses.fields(RIMConfig))
"""Names of the RIM settings (flat keys of the ``model`` settings before 0.2)."""

ModelRIM = Annotated[RIMConfig, tyro.conf.arg(name="model", prefix_name=False)]
"""A `RIMConfig` nested in a top-level ``model`` field, with the flags of ``model`` itself
(``--model.num-units``, not ``--model.rim.num-units``)."""


def upgrade_saved_config(
    config: Mapping[str, Any], *, total_hidden: bool = False
) -> dict[str, Any]:
    """A saved training config from before `RIMConfig` (flat RIM settings) in today's form.

    Args:
        config: a saved training config (a checkpoint's ``config``); returned as a copy,
            unchanged when its ``model`` settings are already nested.
        total_hidden: the old ``model.hidden_size`` was the total memory width (MiniGrid),
            not the per-unit size; it becomes ``lstm_hidden`` and ``rim.hidden_size = total/N``.
    """
    config = dict(config)
    model = config.get("model")
    if not isinstance(model, Mapping) or "rim" in model:
        return config
    model = dict(model)
    config["model"] = model
    if not any(name in model for name in RIM_FIELDS):
        return config
    rim = {name: model.pop(name) for name in RIM_FIELDS if name in model}
    if total_hidden and "hidden_size" in rim:
        total = int(rim["hidden_size"])
        rim["hidden_size"] = total // int(rim.get("num_units", 4))
        model["lstm_hidden"] = total
    model["rim"] = rim
    return config


@dataclasses.dataclass(frozen=True)
class SeqModelConfig:
    """The sequence classifier: optional pixel embedding → RIM or LSTM → linear readout."""

    kind: Literal["rim", "lstm"] = "rim"
    """`rim` (one RIM layer) or the `lstm` baseline (nn.LSTM of `lstm-hidden` units)."""
    rim: ModelRIM = RIMConfig()
    """The RIM layer (with `--model.kind rim`)."""
    lstm_hidden: Positive = 600
    """Hidden size of the LSTM baseline (600 = the README's total width)."""
    embedding: Literal["token", "linear", "none"] = "token"
    """Input transform: `token` (learned embedding of the binarised pixel, the fix users
    needed), `linear` (Linear(1 → embedding-size) of the 0/1 pixel), `none` (the raw 0/255
    value as one feature, the community script's setting)."""
    embedding_size: Positive = 600
    """Width of the pixel embedding (ignored with `--model.embedding none`)."""
    init_state: Literal["zeros", "random"] = "zeros"
    """Initial state: zeros, or standard normal on every call (original; stochastic eval)."""


@dataclasses.dataclass(frozen=True)
class SeqDataConfig:
    """Sequential digits: images resized (nearest neighbour), binarised, read pixel by pixel."""

    dataset: Literal["mnist", "digits"] = "mnist"
    """`mnist` (IDX files, downloaded and checksummed by compkit-utils) or `digits`
    (scikit-learn's bundled 8×8 digits; offline)."""
    data_dir: str | None = None
    """MNIST directory (default: $COMPKIT_DATA_DIR, then ~/.cache/compkit/mnist)."""
    download: bool = True
    """Download MNIST when it is missing (a manually placed copy is always accepted)."""
    train_size: Annotated[int | None, Range(2)] = None
    """Training image side (default 14 for MNIST, 8 for digits)."""
    test_sizes: Annotated[tuple[int, ...] | None, Range(2)] = None
    """Test image sides (default 14 16 19 24 for MNIST, 8 9 11 14 for digits)."""
    train_limit: Annotated[int | None, Range(1)] = None
    """Use only the first N training images (after the seeded digits split)."""
    test_limit: Annotated[int | None, Range(1)] = None
    """Use only the first N test images."""
    digits_test_fraction: Annotated[float, Range(0, 1, lo_open=True, hi_open=True)] = 0.25
    """Digits only: fraction held out as the test set (seeded split)."""


@dataclasses.dataclass(frozen=True)
class SeqOptimConfig:
    """Optimisation."""

    lr: Annotated[float, Range(0, None, lo_open=True)] = 1e-3
    """Adam learning rate."""
    batch_size: Positive = 64
    """Training batch size."""
    eval_batch_size: Positive = 512
    """Evaluation batch size."""
    grad_clip: Annotated[float | None, Range(0, None, lo_open=True)] = 1.0
    """Clip the global gradient norm (none = no clipping, the community script)."""
    entropy_coef: Annotated[float, Range()] = 0.0
    """Add coef·H(p) to the loss (the community script used 1.0; computed stably)."""
    shuffle: bool = True
    """Shuffle training batches each epoch (the community script did not)."""


@dataclasses.dataclass(frozen=True)
class SeqLogConfig:
    """Metric mirrors (``metrics.jsonl`` is always written)."""

    tensorboard: bool = False
    """Mirror metrics to TensorBoard event files in the run directory (needs the
    ``tensorboard`` extra)."""
    wandb: bool = False
    """Mirror metrics to Weights & Biases (needs the ``wandb`` extra)."""


@dataclasses.dataclass(frozen=True)
class SeqMnistTrainConfig:
    """Train a RIM or LSTM on sequential MNIST/digits; test on larger images each epoch."""

    model: SeqModelConfig = SeqModelConfig()
    data: SeqDataConfig = SeqDataConfig()
    optim: SeqOptimConfig = SeqOptimConfig()
    log: SeqLogConfig = SeqLogConfig()
    epochs: Positive = 20
    """Training epochs."""
    seed: int = 0
    """Random seed (model init, data order, dropout, digits split)."""
    device: DeviceName = "auto"
    """auto (CUDA if available), cpu, cuda or mps."""
    threads: Annotated[int | None, Range(1)] = None
    """CPU threads for torch (default: torch's choice or $OMP_NUM_THREADS)."""
    runs_dir: Annotated[str | None, OutputDir()] = None
    """Runs root (default: $RUNS_DIR, then ./runs)."""
    run_name: str | None = None
    """Run directory name (default: train__<seed>__<UTC time>)."""
    resume: bool = False
    """Continue the run named by --run-name (default: the newest train run) from its last
    checkpoint."""
    plot: bool = False
    """After training, write activations.png (active units over time) into the run dir."""
    smoke: bool = False
    """Tiny offline run (digits, small model, 1 epoch) that checks the whole code path;
    explicit flags still win (`--smoke --epochs 2`)."""

    @classmethod
    def smoke_defaults(cls) -> SeqMnistTrainConfig:
        """The ``--smoke`` settings: offline digits subset, tiny model, one epoch."""
        rim = RIMConfig(
            num_units=3,
            k_active=2,
            hidden_size=8,
            input_key_size=8,
            input_value_size=16,
            comm_key_size=8,
            num_comm_heads=2,
        )
        return cls(
            model=SeqModelConfig(rim=rim, lstm_hidden=24, embedding_size=8),
            data=SeqDataConfig(dataset="digits", train_limit=96, test_limit=48, test_sizes=(8, 10)),
            optim=SeqOptimConfig(batch_size=32, eval_batch_size=64),
            epochs=1,
            smoke=True,
        )

    def check(self) -> None:
        """Cross-field rules."""
        if self.plot and self.model.kind != "rim":
            raise UserError(
                "--plot needs --model.kind rim (an LSTM has no units to show); drop --plot"
            )


@dataclasses.dataclass(frozen=True)
class SeqMnistEvaluateConfig:
    """Evaluate a sequential-MNIST/digits checkpoint at several image sizes."""

    checkpoint: Annotated[str | None, InputFile()] = None
    """Checkpoint file (a run's checkpoints/last.pt); required."""
    test_sizes: Annotated[tuple[int, ...] | None, Range(2)] = None
    """Image sides to test (default: those of the training run)."""
    data_dir: str | None = None
    """MNIST directory override."""
    test_limit: Annotated[int | None, Range(1)] = None
    """Evaluate only the first N test images."""
    device: DeviceName = "auto"
    """auto, cpu, cuda or mps."""
    threads: Annotated[int | None, Range(1)] = None
    """CPU threads for torch."""
    out: str | None = None
    """Also write the accuracies to this JSON file."""

    def check(self) -> None:
        """The checkpoint is required."""
        _require_checkpoint(self.checkpoint)


@dataclasses.dataclass(frozen=True)
class PlotActivationsConfig:
    """Heat-map of which RIM units are active at each step (and their input attention)."""

    checkpoint: Annotated[str | None, InputFile()] = None
    """Checkpoint of a `seqmnist train --model.kind rim` run; required."""
    out: str = "activations.png"
    """Output PNG file."""
    size: Annotated[int | None, Range(2)] = None
    """Image side to show (default: the training size)."""
    index: Annotated[int, Range(0)] = 0
    """Which test image to show."""
    data_dir: str | None = None
    """MNIST directory override."""
    dpi: Positive = 80
    """Figure resolution."""

    def check(self) -> None:
        """The checkpoint is required."""
        _require_checkpoint(self.checkpoint)


def _require_checkpoint(checkpoint: str | None) -> None:
    if not checkpoint:
        raise UserError("--checkpoint is required (a run's checkpoints/last.pt)")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Time RIMCell and RIM (forward+backward) against nn.LSTM and a looped nn.LSTMCell."""

    batch_size: Positive = 32
    """Batch size B."""
    seq_len: Positive = 50
    """Sequence length T."""
    input_size: Positive = 32
    """Input features I."""
    hidden_size: Positive = 64
    """Hidden features per unit H."""
    num_units: Positive = 6
    """Units N (the LSTM baselines get N·H hidden units)."""
    k_active: Positive = 4
    """Active units k."""
    rnn_cell: Literal["LSTM", "GRU"] = "LSTM"
    """Cell type of the RIM units."""
    threads: Annotated[int | None, Range(1)] = None
    """torch CPU threads (default: $OMP_NUM_THREADS, else one per idle core; the reference
    figures use 2)."""
    repeats: Positive = 10
    """Timed repetitions per model (the minimum and median are reported)."""
    warmup: Annotated[int, Range(0)] = 2
    """Untimed warm-up repetitions."""
    sweep_units: tuple[Annotated[int, Range(2)], ...] = (2, 4, 6, 12, 24, 48)
    """Numbers of units for the scaling table (k = 2N/3); empty to skip."""
    quick: bool = False
    """Fewer repetitions and a shorter sweep (finishes in well under a minute)."""
    kernels: Literal["auto", "torch", "native"] = "auto"
    """RIM time loop: `native` (the C kernels, LSTM units on CPU), `torch` (the PyTorch
    path) or `auto` (native when available). With native kernels the PyTorch path is timed
    too, as the row `RIM, PyTorch path`."""
    device: DeviceName = "cpu"
    """Device to benchmark on."""
    out: str | None = None
    """Also write the results to this JSON file."""
    contended: bool = False
    """Also time nn.LSTM, the RIMCell loop and RIM beside one busy process, at the default
    thread count and at 1 thread, and print the ratio default/1 thread."""

    def check(self) -> None:
        """At most N units can be active."""
        if self.k_active > self.num_units:
            raise UserError(
                f"--k-active ({self.k_active}) must be at most --num-units ({self.num_units})"
            )
