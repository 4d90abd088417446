"""Actor-critic with recurrent memory (RIM cell or LSTM cell) for MiniGrid.

Architecture (as in the community repository's rl-starter-files model):

* image encoder: Conv2d(3→16, 2×2) → ReLU → MaxPool(2×2) → Conv2d(16→32, 2×2) → ReLU →
  Conv2d(32→64, 2×2) → ReLU → flatten (64 features for a 7×7 view);
* memory: ``LSTMCell(64 → 64)`` or a RIM cell with N = 4 units of 16 (k active), both
  carrying a memory vector [h; c] of 2 · 64 features per environment;
* actor Linear(64→64) → tanh → Linear(64→7) and critic Linear(64→64) → tanh → Linear(64→1),
  both reading the new h.

Every ``nn.Linear`` (also the RIM's shared input key/value projections) is initialised with
N(0, 1) weights whose rows are rescaled to unit L2 norm and zero biases; the LSTM cell and
the RIM's group layers keep their own initialisation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from rim_cells.minigrid.config import ModelConfig


def init_linear(module: nn.Module) -> None:
    """Row-normalised Gaussian init for ``nn.Linear`` (weights N(0,1), rows unit norm, bias 0)."""
    if isinstance(module, nn.Linear):
        with torch.no_grad():
            module.weight.normal_(0.0, 1.0)
            module.weight.div_(module.weight.pow(2).sum(dim=1, keepdim=True).sqrt())
            if module.bias is not None:
                module.bias.zero_()


class LSTMMemory(nn.Module):
    """Baseline memory: one ``nn.LSTMCell(input_size → hidden_size)``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(input_size, hidden_size)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x (B, I), h and c (B, H) → new (h, c), each (B, H)."""
        return self.cell(x, (h, c))


class RIMMemory(nn.Module):
    """RIM memory: one :class:`rim_cells.RIMCell` whose units' states are flattened.

    h and c (B, N·H_unit) are viewed as (B, N, H_unit) for the cell and flattened back.
    """

    def __init__(self, input_size: int, cfg: ModelConfig) -> None:
        super().__init__()
        from rim_cells import RIMCell

        self.num_units = cfg.rim.num_units
        self.unit_size = cfg.rim.hidden_size
        self.cell = RIMCell(None, input_size, **cfg.rim.cell_kwargs())

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x (B, I), h and c (B, N·H_unit) → new (h, c), same shapes."""
        batch = x.shape[0]
        shape = (batch, self.num_units, self.unit_size)
        h_new, c_new = self.cell(x.unsqueeze(1), h.reshape(shape), c.reshape(shape))
        assert c_new is not None
        return h_new.reshape(batch, -1), c_new.reshape(batch, -1)


class ActorCritic(nn.Module):
    """Recurrent actor-critic for MiniGrid.

    Args:
        cfg: model configuration (memory type, sizes, RIM settings, cell-state bug flag).
        view_shape: (width, height) of the egocentric view (7×7 in MiniGrid).
        num_actions: size of the discrete action space (7).
    """

    def __init__(
        self, cfg: ModelConfig, view_shape: tuple[int, int] = (7, 7), num_actions: int = 7
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_conv = nn.Sequential(
            nn.Conv2d(3, 16, (2, 2)),
            nn.ReLU(),
            nn.MaxPool2d((2, 2)),
            nn.Conv2d(16, 32, (2, 2)),
            nn.ReLU(),
            nn.Conv2d(32, 64, (2, 2)),
            nn.ReLU(),
        )
        n, m = view_shape
        self.embedding_size = ((n - 1) // 2 - 2) * ((m - 1) // 2 - 2) * 64
        self.hidden_size = cfg.hidden_size
        self.memory_cell: nn.Module
        if cfg.memory == "lstm":
            self.memory_cell = LSTMMemory(self.embedding_size, cfg.lstm_hidden)
        else:
            self.memory_cell = RIMMemory(self.embedding_size, cfg)
        self.actor = nn.Sequential(
            nn.Linear(cfg.hidden_size, 64), nn.Tanh(), nn.Linear(64, num_actions)
        )
        self.critic = nn.Sequential(nn.Linear(cfg.hidden_size, 64), nn.Tanh(), nn.Linear(64, 1))
        self.apply(init_linear)

    @property
    def memory_size(self) -> int:
        """Width of the memory vector [h; c]."""
        return 2 * self.hidden_size

    def initial_memory(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Zero memory (batch, memory_size)."""
        return torch.zeros(batch, self.memory_size, device=device)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Image features: obs (B, 3, W, H) float → (B, embedding_size)."""
        if obs.ndim != 4 or obs.shape[1] != 3:
            raise ValueError(f"obs must be (B, 3, W, H), got {tuple(obs.shape)}")
        return self.image_conv(obs).reshape(obs.shape[0], -1)

    def memory_step(
        self, x: torch.Tensor, memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One memory step: x (B, embedding_size), memory [h; c] (B, 2·hidden_size).

        Returns:
            ``(new h (B, hidden_size), new memory (B, 2·hidden_size))``.
        """
        if memory.shape != (x.shape[0], self.memory_size):
            raise ValueError(
                f"memory must be ({x.shape[0]}, {self.memory_size}), got {tuple(memory.shape)}"
            )
        h, c = memory[:, : self.hidden_size], memory[:, self.hidden_size :]
        if self.cfg.cell_state_bug:
            c = h  # parity with the original: the stored cell state is discarded
        h, c = self.memory_cell(x, h, c)
        return h, torch.cat([h, c], dim=1)

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Actor logits (B, num_actions) and critic value (B,) from h (B, hidden_size)."""
        return self.actor(h), self.critic(h).squeeze(1)

    def forward(
        self, obs: torch.Tensor, memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of the agent.

        Args:
            obs: preprocessed images (B, 3, W, H), float.
            memory: [h; c] (B, 2·hidden_size), already zeroed where an episode restarted.

        Returns:
            ``(logits (B, num_actions), value (B,), new memory (B, 2·hidden_size))``.
        """
        h, memory = self.memory_step(self.encode(obs), memory)
        logits, value = self.heads(h)
        return logits, value, memory
