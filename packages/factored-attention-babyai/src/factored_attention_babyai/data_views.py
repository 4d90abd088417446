"""Views of the demonstrations for ``train-discriminator`` and ``train-planner``.

Both read the same training subset and validation seeds as ``train-bc``
(:func:`~factored_attention_babyai.bc_data.load_bc_data`, or bot demos made on the spot with
``--smoke``). The discriminator additionally needs the subset grouped by goal
(:func:`group_by_goal`) and, for validation, the initial frame and goal mask of each
validation demo, recreated exactly by resetting the environment to the demo's stored seed
(:func:`initial_frames`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compkit_utils.errors import UserError

if TYPE_CHECKING:
    import torch

    from factored_attention_babyai.bc_data import BcData
    from factored_attention_babyai.disc_core import GoalDemos

#: Bot demonstrations made for ``--smoke`` without ``--data``.
SMOKE_DEMOS = 48


def load_demos(
    data: Path | None, *, seed: int, per_goal: int | None, vlimit: int, tlimit: int
) -> BcData:
    """The training subset and validation seeds (``data`` None: a few bot demos, for --smoke)."""
    from factored_attention_babyai.bc_data import load_bc_data, make_smoke_data

    if data is None:
        return make_smoke_data(seed, vlimit=vlimit, tlimit=tlimit, demos=SMOKE_DEMOS)
    return load_bc_data(data, per_goal=per_goal, vlimit=vlimit, tlimit=tlimit)


def group_by_goal(data: BcData) -> GoalDemos:
    """Group the training demos by mission (file order), ``n`` = the smallest goal's count.

    Goals with a single demonstration are left out (a positive pair needs two); a dataset of
    ``generate`` has equal counts, so nothing is dropped there.

    Raises:
        UserError: fewer than 2 goals with at least 2 demonstrations each.
    """
    from factored_attention_babyai.disc_core import GoalDemos

    groups: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(data.missions.tolist()):
        groups.setdefault(tuple(row), []).append(i)
    kept = [idx for idx in groups.values() if len(idx) >= 2]
    if len(kept) < 2:
        raise UserError(
            f"--per-goal: the discriminator needs at least 2 goals with 2 or more demos each "
            f"({data.source}); pass --per-goal 2 or more"
        )
    n = min(len(idx) for idx in kept)
    index = np.asarray([idx[:n] for idx in kept])  # [G, n]
    return GoalDemos(
        images=data.images[index],
        directions=data.directions[index],
        lengths=data.lengths[index],
        missions=data.missions[index[:, 0]],
    )


def initial_frames(
    seeds: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Initial observation, mission tokens and goal mask of each seed's episode.

    Returns:
        images [N, 8, 8, 3] uint8, missions [N, 5] long, targets [N, 8, 8] bool, on ``device``.
    """
    import torch

    from factored_attention_babyai.env import make_env

    env = make_env()
    images, missions, targets = [], [], []
    try:
        for seed in seeds.tolist():
            obs, _ = env.reset(seed=int(seed))
            images.append(obs["image"])
            missions.append(obs["mission_tokens"])
            targets.append(obs["target_mask"])
    finally:
        env.close()
    return (
        torch.from_numpy(np.stack(images).astype(np.uint8)).to(device),
        torch.from_numpy(np.stack(missions).astype(np.int64)).to(device),
        torch.from_numpy(np.stack(targets).astype(bool)).to(device),
    )
