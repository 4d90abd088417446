"""The sequence classifier: pixel embedding → RIM (or LSTM) → linear readout of the final state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from rim_cells.rim import RIM

if TYPE_CHECKING:
    from rim_cells.cell import RIMStepInfo
    from rim_cells.config import SeqModelConfig


class SequenceClassifier(nn.Module):
    """Classify a pixel sequence from the recurrent network's final hidden state.

    Args:
        cfg: the model configuration.
        num_classes: output classes.

    Shapes:
        ``tokens``: ``(batch, time)`` integer pixels in {0, 1} → logits ``(batch, classes)``.
    """

    def __init__(self, cfg: SeqModelConfig, num_classes: int = 10) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed: nn.Module | None
        if cfg.embedding == "token":
            self.embed = nn.Embedding(2, cfg.embedding_size)
            width = cfg.embedding_size
        elif cfg.embedding == "linear":
            self.embed = nn.Linear(1, cfg.embedding_size)
            width = cfg.embedding_size
        else:
            self.embed = None
            width = 1
        self.core: nn.Module
        if cfg.kind == "rim":
            self.core = RIM(
                None,
                width,
                batch_first=True,
                init_state=cfg.init_state,
                **cfg.rim.cell_kwargs(),
            )
            features = cfg.rim.width
        else:
            self.core = nn.LSTM(width, cfg.lstm_hidden, batch_first=True)
            features = cfg.lstm_hidden
        self.head = nn.Linear(features, num_classes)

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """``(batch, time)`` tokens → ``(batch, time, features)`` inputs of the core."""
        if self.cfg.embedding == "token":
            assert self.embed is not None
            return self.embed(tokens.long())
        if self.cfg.embedding == "linear":
            assert self.embed is not None
            return self.embed(tokens.float().unsqueeze(-1))
        return tokens.float().unsqueeze(-1) * 255.0  # raw 0/255 pixel, community parity

    def forward(
        self, tokens: Tensor, *, return_info: bool = False
    ) -> Tensor | tuple[Tensor, list[RIMStepInfo]]:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, time), got {tuple(tokens.shape)}")
        x = self.embed_tokens(tokens)
        infos: list[Any] = []
        if isinstance(self.core, RIM):
            result = self.core(x, return_info=return_info)
            h_final = result[1][-1]
            if return_info:
                infos = result[-1]
        else:
            assert isinstance(self.core, nn.LSTM)
            state = None
            if self.cfg.init_state == "random":
                shape = (1, x.shape[0], self.cfg.lstm_hidden)
                state = (torch.randn(shape, device=x.device), torch.randn(shape, device=x.device))
            _, (h_n, _) = self.core(x, state)
            h_final = h_n[-1]
        logits = self.head(h_final)
        if return_info:
            return logits, infos
        return logits
