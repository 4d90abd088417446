"""Configuration of the model commands: ``ilpo lpn``, ``arn``, ``bc``, ``bco`` and ``bench``.

Same pattern as :mod:`ilpo.config` (markers on every field, ``check`` for cross-field rules,
``smoke_defaults`` for ``--smoke``). No torch import here, so ``ilpo --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal, Self

from compkit_utils.devices import DeviceName
from compkit_utils.errors import UserError
from compkit_utils.validate import Choice, InputPath, Range
from ilpo.config import IMAGE_ENVS, AnyEnvName, AtLeast1, EnvName, Positive, RunsDir, Seed, Threads

__all__ = [
    "ArnConfig",
    "BcConfig",
    "BcoConfig",
    "BenchConfig",
    "ExperimentConfig",
    "LpnConfig",
]

Probability = Annotated[float, Range(0, 1)]
AtLeast0 = Annotated[int, Range(0)]
DataPath = Annotated[Path | None, InputPath()]
MaxTransitions = Annotated[int | None, Range(1)]


def _need_data(data: Path | None, smoke: bool, what: str) -> None:
    if data is None and not smoke:
        raise UserError(
            f"--data is required: {what} (a folder of *.txt files, a .txt file, or the .h5 / "
            "run folder of `ilpo collect`)"
        )


@dataclasses.dataclass(frozen=True)
class LpnConfig:
    """Train the Latent Policy Network on state-only demonstrations."""

    data: DataPath = None
    """State-only demonstrations (`[s] [s']` text folder/file, or the HDF5 of `ilpo collect`);
    for an image env, a folder of `[A|B]` PNG pairs, a frames.h5 or an image collect run."""
    env: AnyEnvName = "CartPole-v1"
    """Environment the demonstrations come from (checked against the data; recorded in the
    checkpoint so that `ilpo arn` refuses an LPN of another environment). A MiniGrid env
    trains the U-Net LPN on 128×128 frames."""
    latents: Annotated[int | None, Range(2)] = None
    """|Z|, the number of latent actions (default: the environment's action count)."""
    epochs: AtLeast1 = 100
    """Passes over the data (the ICML code: 100)."""
    batch_size: AtLeast1 = 32
    lr: Positive = 2e-4
    """Adam learning rate (beta1 0.5, beta2 0.999)."""
    beta1: Annotated[float, Range(0, 1, hi_open=True)] = 0.5
    ngf: Annotated[int | None, Range(1)] = None
    """Width (default 128 for vectors: encoder d → ngf → 2·ngf; 15 for images: U-Net
    channels ngf … 8·ngf)."""
    max_transitions: MaxTransitions = 50_000
    """Use at most this many transitions (the original's cap)."""
    checkpoint_every: AtLeast1 = 1
    """Write checkpoints/step_<epoch>.pt and last.pt every N epochs."""
    seed: Seed = 0
    threads: Threads = None
    """CPU threads for torch (default: $OMP_NUM_THREADS, else one per idle core)."""
    device: DeviceName = "cpu"
    """Device (the vector LPN is small: the CPU is fastest)."""
    runs_dir: RunsDir = None
    """Runs root (default: $RUNS_DIR, else ./runs); the run goes to <runs-dir>/ilpo/."""
    run_name: str | None = None
    resume: bool = False
    """Continue the run named by --run-name (else the newest lpn run with a last.pt)."""
    tensorboard: bool = False
    """Also write TensorBoard event files (needs the tensorboard extra)."""
    smoke: bool = False
    """Seconds-long run; without --data, 600 random-policy transitions of --env."""

    def check(self) -> None:
        """--data is needed outside --smoke."""
        _need_data(self.data, self.smoke, "state-only demonstrations")

    @classmethod
    def smoke_defaults(cls) -> Self:
        """The defaults of ``lpn --smoke``."""
        return cls(smoke=True, epochs=2, ngf=16)


@dataclasses.dataclass(frozen=True)
class ArnConfig:
    """Online stage: learn the Action Remapping Network with a few environment steps."""

    lpn: Annotated[Path | None, InputPath()] = None
    """A trained LPN: an `ilpo lpn` run folder or a checkpoint file in it."""
    env: AnyEnvName = "CartPole-v1"
    """Environment to interact with (must be the LPN's)."""
    steps: AtLeast1 = 1000
    """T, counted environment interactions."""
    epsilon: Probability = 0.2
    """Constant probability of a uniformly random action (original: 0.2)."""
    batch_size: AtLeast1 = 32
    lr: Positive = 2e-3
    """ARN Adam learning rate."""
    eval_every: AtLeast1 = 50
    eval_episodes: AtLeast1 = 1
    """Greedy episodes per point of the faithful curve (original: 1)."""
    eval_env: Literal["train", "separate"] = "train"
    """train: evaluate on the training env object, then reset it (original); separate: a
    second env with its own seeds."""
    acting: Literal["greedy-greedy", "marginal"] = "greedy-greedy"
    """greedy-greedy: argmax_z then argmax_a (original code); marginal: argmax_a of
    Σ_z π(a|s,z) π(z|s) (the paper's formula)."""
    label_distance: Literal["raw", "scaled"] = "raw"
    """z* distance in raw state units (original) or per-dimension scaled by the std of the
    demonstrations' state changes."""
    heldout_episodes: AtLeast0 = 10
    """Better protocol beside the faithful one: greedy episodes per point on held-out seeds
    (0: off)."""
    random_episodes: AtLeast0 = 10
    """Episodes of the uniform-random policy recorded for reference (0: off)."""
    seed: Seed = 0
    """Experiment index k: seeds everything and names <k>.csv."""
    threads: Threads = None
    runs_dir: RunsDir = None
    run_name: str | None = None
    resume: bool = False
    """Continue the run named by --run-name (else the newest arn run with a checkpoint) from
    its last checkpoint (written after every evaluation point and on Ctrl-C)."""
    tensorboard: bool = False
    smoke: bool = False
    """Seconds-long run; without --lpn, a freshly initialised small LPN."""

    def check(self) -> None:
        """--lpn is needed outside --smoke."""
        if self.lpn is None and not self.smoke:
            raise UserError("--lpn is required: the run folder (or checkpoint) of `ilpo lpn`")

    @classmethod
    def smoke_defaults(cls) -> Self:
        """The defaults of ``arn --smoke``."""
        return cls(smoke=True, steps=100, heldout_episodes=2, random_episodes=2)


@dataclasses.dataclass(frozen=True)
class BcConfig:
    """Behavioural cloning with the true actions (the BC baseline line)."""

    data: DataPath = None
    """BC demonstrations (`[s] [a] [s']` text, or the HDF5 of `ilpo collect`)."""
    env: EnvName = "CartPole-v1"
    epochs: AtLeast1 = 1000
    """Passes over the data (the original: 1,000)."""
    batch_size: AtLeast1 = 32
    lr: Positive = 2e-4
    beta1: Annotated[float, Range(0, 1, hi_open=True)] = 0.5
    max_transitions: MaxTransitions = 50_000
    eval_episodes: AtLeast1 = 100
    """Greedy evaluation episodes on held-out seeds (the original: 100)."""
    seed: Seed = 0
    threads: Threads = None
    runs_dir: RunsDir = None
    run_name: str | None = None
    resume: bool = False
    """Continue the run named by --run-name (else the newest bc run with a checkpoint) from
    its last checkpoint (written after every epoch; Ctrl-C stops after the current one)."""
    tensorboard: bool = False
    smoke: bool = False
    """Seconds-long run; without --data, 600 random-policy transitions of --env."""

    def check(self) -> None:
        """--data is needed outside --smoke."""
        _need_data(self.data, self.smoke, "demonstrations with actions")

    @classmethod
    def smoke_defaults(cls) -> Self:
        """The defaults of ``bc --smoke``."""
        return cls(smoke=True, epochs=2, eval_episodes=2)


@dataclasses.dataclass(frozen=True)
class BcoConfig:
    """BCO(α) with the same interaction budget as ILPO (as the original re-implemented it)."""

    data: DataPath = None
    """State-only demonstrations (as for `ilpo lpn`)."""
    env: EnvName = "CartPole-v1"
    steps: AtLeast1 = 1000
    """Interaction budget."""
    steps_per_iter: AtLeast1 = 50
    """Steps collected per iteration (= the evaluation grid)."""
    idm_steps: AtLeast1 = 10_000
    """Adam steps on the inverse-dynamics model per iteration."""
    idm_lr: Positive = 2e-4
    policy_steps: AtLeast1 = 10_000
    """Adam steps on the policy per iteration."""
    policy_lr: Positive = 2e-3
    batch_size: AtLeast1 = 32
    max_transitions: MaxTransitions = 50_000
    eval_episodes: AtLeast1 = 1
    heldout_episodes: AtLeast0 = 10
    """Greedy episodes per point on held-out seeds (0: off)."""
    seed: Seed = 0
    """Experiment index k: seeds everything and names <k>.csv."""
    threads: Threads = None
    runs_dir: RunsDir = None
    run_name: str | None = None
    resume: bool = False
    """Continue the run named by --run-name (else the newest bco run with a checkpoint) from
    its last checkpoint (written after every iteration and on Ctrl-C)."""
    tensorboard: bool = False
    smoke: bool = False
    """Seconds-long run; without --data, 600 random-policy transitions of --env."""

    def check(self) -> None:
        """--data is needed outside --smoke."""
        _need_data(self.data, self.smoke, "state-only demonstrations")

    @classmethod
    def smoke_defaults(cls) -> Self:
        """The defaults of ``bco --smoke``."""
        return cls(smoke=True, steps=100, idm_steps=20, policy_steps=20, heldout_episodes=2)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Time the LPN training step (vs a loop over latents) and an online ARN run.

    Also the BC/BCO training steps (native kernel vs PyTorch ops).
    """

    steps: AtLeast1 = 300
    """Timed LPN steps per measurement (and native BC/BCO steps; a third of them as
    PyTorch ops)."""
    warmup: AtLeast0 = 30
    batch_size: AtLeast1 = 32
    online: bool = True
    """Also time one 1,000-step online run on CartPole-v1."""
    baselines: bool = True
    """Also time the BC and BCO training steps (faithful preset's per-seed estimate)."""
    threads: Threads = None
    seed: Seed = 0
    smoke: bool = False

    @classmethod
    def smoke_defaults(cls) -> Self:
        """The defaults of ``bench --smoke``."""
        return cls(smoke=True, steps=10, warmup=2, online=False)


PAPER_ENVS = ("CartPole-v1", "Acrobot-v1")
"""The environments of the paper's vector experiment."""


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """The paper's experiment in one command, from the expert to the table and figure.

    Expert → demonstrations → LPN → ARN over seeds (a sweep) → BC and BCO over the same
    seeds → results.md, results.json and curves.png.
    """

    env: Annotated[str, Choice(*PAPER_ENVS, *IMAGE_ENVS)] = "CartPole-v1"
    """Environment of the experiment (a MiniGrid env runs the image pipeline: BFS
    demonstrator, U-Net LPN, image ARN; a new experiment, without BC/BCO)."""
    preset: Literal["quick", "faithful"] = "quick"
    """quick: 10 seeds, 10 LPN epochs, short BC/BCO training; faithful: 50 seeds, 100 LPN
    epochs, the original's BC (1,000 epochs) and BCO (10,000 Adam steps per iteration)."""
    seeds: str | None = None
    """Seeds of the ARN, BC and BCO runs (0-9, 0,3,7; default: the preset's)."""
    workers: AtLeast1 = 1
    """Parallel runs of each sweep (local process pool)."""
    overlap: bool = True
    """Run the BC and BCO sweeps beside the LPN and ARN stages (they need only the
    demonstrations); --no-overlap runs the stages one after another (clean stage times)."""
    seed: Seed = 0
    """Seed of the shared stages (expert, demonstrations, LPN)."""
    runs_dir: RunsDir = None
    """Runs root (default: $RUNS_DIR, else ./runs); the run goes to <runs-dir>/ilpo/."""
    run_name: str | None = None
    """Experiment directory name (default experiment__<seed>__<UTC time>); rerunning with
    the same name reuses every finished stage."""
    smoke: bool = False
    """Seconds-long run of the whole pipeline: tiny stages, seeds 0-1."""

    def check(self) -> None:
        """--seeds must name at least one seed; the image env has only the quick preset."""
        if self.env in IMAGE_ENVS and self.preset != "quick":
            raise UserError(
                f"--preset {self.preset}: the image experiment ({self.env}) is new, not a "
                "reproduction, and has only --preset quick"
            )
        if self.seeds is not None:
            from compkit_utils.sweep.grid import parse_seeds

            parse_seeds(self.seeds)

    @classmethod
    def smoke_defaults(cls) -> Self:
        """The defaults of ``experiment --smoke``."""
        return cls(smoke=True, seeds="0-1")
