"""The stage-1 training data in memory (env spec §9): programs, initial states, actions.

A dataset in the original layout (`leaps_karel.reader.KarelProgramDataset`: ours or the
original's ``data.hdf5`` + ``id.txt``) is read once into compact arrays: only the programs with
fewer than 45 tokens are kept, padded with 50 to 46; of each demonstration only the initial
state (bit-packed) and the action sequence (padded with 5) are kept — the executor's later
states are recomputed by stepping the simulator (`leaps_karel.learn.model.step_states`). The
programs are shuffled with the seed and split 70 / 15 / 15 into train / validation / test.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from compkit_utils.errors import UserError
from leaps_karel import dsl
from leaps_karel.world import NOOP, NUM_CHANNELS

__all__ = ["ProgramData", "load_program_data", "smoke_program_data", "split_indices"]

PAD = dsl.PAD_ID
#: Decoder input length: 45 steps + DEF.
SEQ = 46


@dataclasses.dataclass
class ProgramData:
    """Programs with their demonstrations (N programs, D demos, A ≥ 1 action slots).

    Attributes:
        ids: int64 ``[N, 46]`` token ids, ``DEF`` first, padded with 50.
        lengths: int64 ``[N]`` real tokens (``DEF`` … ``m)``).
        s0: uint8 ``[N, D, 16 * h * w / 8]`` bit-packed initial states (channels first).
        actions: int64 ``[N, D, A]`` action ids padded with 5.
        action_lengths: int64 ``[N, D]`` actions per demo.
        hw: ``(h, w)`` grid size.
    """

    ids: np.ndarray
    lengths: np.ndarray
    s0: np.ndarray
    actions: np.ndarray
    action_lengths: np.ndarray
    hw: tuple[int, int]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def states(self, index: np.ndarray) -> np.ndarray:
        """float32 ``[len(index), D, 16, h, w]`` initial states of the given programs."""
        h, w = self.hw
        bits = np.unpackbits(self.s0[index], axis=-1, count=NUM_CHANNELS * h * w)
        return bits.reshape(len(index), -1, NUM_CHANNELS, h, w).astype(np.float32)

    def subset(self, index: np.ndarray) -> ProgramData:
        """The programs at ``index`` (copies)."""
        return ProgramData(
            self.ids[index],
            self.lengths[index],
            self.s0[index],
            self.actions[index],
            self.action_lengths[index],
            self.hw,
        )

    def texts(self, index: np.ndarray | None = None) -> list[str]:
        """Program texts of the given programs (all by default)."""
        rows = self.ids if index is None else self.ids[index]
        return [dsl.ids_to_text(r.tolist()) for r in rows]


def _pack(items: list[dict[str, np.ndarray]], max_tokens: int, source: str) -> ProgramData:
    keep = [it for it in items if len(it["program"]) <= max_tokens]
    if not keep:
        raise UserError(f"{source}: no program with at most {max_tokens} tokens")
    n = len(keep)
    demos = {it["s_h"].shape[0] for it in keep}
    shapes = {it["s_h"].shape[2:4] for it in keep}
    if len(demos) != 1 or len(shapes) != 1:
        raise UserError(
            f"{source}: programs have different numbers of demos or grid sizes; a dataset of "
            "`leaps-karel generate-dataset` has the same for all"
        )
    d = demos.pop()
    h, w = (int(x) for x in shapes.pop())
    width = max(1, max(int(it["a_h_len"].max()) for it in keep))
    ids = np.full((n, SEQ), PAD, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    s0 = np.zeros((n, d, NUM_CHANNELS * h * w // 8 + (NUM_CHANNELS * h * w % 8 > 0)), np.uint8)
    actions = np.full((n, d, width), NOOP, dtype=np.int64)
    action_lengths = np.zeros((n, d), dtype=np.int64)
    for i, it in enumerate(keep):
        prog = it["program"].astype(np.int64)
        if prog.min() < 0 or prog.max() >= dsl.NUM_TOKENS or prog[0] != dsl.VOCAB["DEF"]:
            raise UserError(
                f"{source}: program {i} holds token ids outside this DSL's 50 tokens; the "
                "dataset was written by something else"
            )
        ids[i, : len(prog)] = prog
        lengths[i] = len(prog)
        first = np.ascontiguousarray(it["s_h"][:, 0].transpose(0, 3, 1, 2)).reshape(d, -1)
        s0[i] = np.packbits(first, axis=-1)
        a_len = it["a_h_len"].astype(np.int64)
        action_lengths[i] = a_len
        for j in range(d):
            actions[i, j, : a_len[j]] = it["a_h"][j, : a_len[j]]
    if actions.max() > NOOP or actions.min() < 0:
        raise UserError(
            f"{source}: action ids outside 0..5; the dataset was written by something else"
        )
    return ProgramData(ids, lengths, s0, actions, action_lengths, (h, w))


def load_program_data(
    path: str | os.PathLike[str], max_tokens: int = 44, progress: bool = False
) -> ProgramData:
    """Read a dataset folder (or ``data.hdf5``) into memory.

    Args:
        path: folder of ``data.hdf5`` + ``id.txt`` (ours or the original's), or the file.
        max_tokens: keep programs with at most this many tokens (``DEF`` included).
        progress: show a progress bar.

    Raises:
        UserError: missing or unreadable files, or a dataset of another layout / vocabulary.
    """
    import h5py
    from tqdm import tqdm

    from leaps_karel.reader import DATA_FILE, KarelProgramDataset

    path = Path(path)
    if path.is_dir() and not (path / DATA_FILE).is_file():
        raise UserError(
            f"{path}: no {DATA_FILE} in this folder; generate a dataset with "
            f"`leaps-karel generate-dataset --out-dir {path}` or pass --data DIR"
        )
    ds = KarelProgramDataset(path)
    source = str(ds.file)
    items = []
    try:
        handle = ds._file_handle()
        for name in tqdm(ds.ids, desc="reading", unit="prog", disable=None if progress else True):
            group = handle[name]
            try:
                items.append(
                    {
                        "program": group["program"][()],
                        "s_h": group["s_h"][:, :1],
                        "a_h": group["a_h"][()],
                        "a_h_len": group["a_h_len"][()],
                    }
                )
            except KeyError:
                raise UserError(
                    f"{source}: program group {name!r} lacks the datasets program / s_h / a_h / "
                    "a_h_len; the file was written by something else"
                ) from None
    except (OSError, RuntimeError, TypeError, ValueError, IndexError) as exc:
        raise UserError(f"{source}: unreadable dataset ({type(exc).__name__}: {exc})") from None
    finally:
        ds.close()
    del h5py
    if not items:
        raise UserError(f"{source}: the dataset holds no programs")
    for it in items:
        if it["s_h"].ndim != 5 or it["s_h"].shape[-1] != NUM_CHANNELS:
            raise UserError(
                f"{source}: s_h is not [D, M, H, W, 16]; the file was written by something else"
            )
    return _pack(items, max_tokens, source)


def smoke_program_data(num_programs: int, seed: int, max_tokens: int = 44) -> ProgramData:
    """A small dataset generated in memory with the engine's sampler and demo generator."""
    from leaps_karel.config import DatasetConfig
    from leaps_karel.demos import candidate_rng, candidate_stream, demos_for_program

    params = DatasetConfig(num_programs=num_programs, seed=seed, max_program_length=max_tokens)
    items: list[dict[str, np.ndarray]] = []
    for index, tokens in enumerate(candidate_stream(params)):
        demos = demos_for_program(tokens, candidate_rng(seed, index), params)
        if demos is not None:
            items.append(demos.arrays())
        if len(items) >= num_programs:
            break
    return _pack(items, max_tokens, "smoke dataset")


def split_indices(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle ``range(n)`` with ``seed`` and split it 70 / 15 / 15 (train, val, test)."""
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_val = int(0.7 * n), int(0.15 * n)
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
