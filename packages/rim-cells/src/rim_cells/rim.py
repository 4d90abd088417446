"""RIM: a multi-layer, optionally bidirectional stack of RIM cells, used like ``nn.LSTM``."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from rim_cells.cell import RIMCell, RIMStepInfo

__all__ = ["RIM"]


class RIM(nn.Module):
    """A recurrent network of RIM layers, similar to ``nn.LSTM`` / ``nn.GRU``.

    The positional signature is the original implementation's, so
    ``RIM("cpu", 16, 24, 6, 4, "LSTM", 4, True)`` works unchanged. Cell ``layer·D + direction``
    (D = 2 if bidirectional else 1) is ``cells[layer * D + direction]``; layer 0 reads
    ``input_size`` features, later layers read the previous layer's ``D·N·H`` outputs.
    Inactive units pass their retained state to the next layer, as in the original.

    Args:
        device: where to create the parameters (``None``, a string or a ``torch.device``);
            ``module.to(...)`` moves everything later.
        input_size: input features I.
        hidden_size: hidden features per unit H.
        num_units: units per layer N (K_t).
        k: active units per step (K_a).
        rnn_cell: ``"LSTM"`` or ``"GRU"``.
        n_layers: number of stacked layers L.
        bidirectional: add a backward-in-time cell per layer.
        batch_first: inputs/outputs are ``(batch, time, features)`` instead of
            ``(time, batch, features)``. States are always ``(L·D, batch, N·H)``.
        init_state: initial states when none are passed: ``"zeros"`` (default) or
            ``"random"`` (standard normal on every call; the original's behaviour, which
            makes evaluation stochastic — parity only).
        **kwargs: passed to every `RIMCell` (attention sizes,
            dropouts, ``activation``, ``gru_init``).

    Shapes (:meth:`forward`):
        ``x``: ``(time, batch, input_size)`` (or batch-first); ``h``, ``c``:
        ``(L·D, batch, N·H)``. Returns ``(output, h, c)`` for LSTM and ``(output, h)`` for
        GRU, with ``output`` ``(time, batch, D·N·H)`` (or batch-first), plus a list of
        `RIMStepInfo` (one per cell, index ``layer·D + dir``) when ``return_info=True``,
        each with leading ``(time, batch)`` axes, or ``(batch, time)`` with
        ``batch_first=True`` (the layout of ``x`` and ``output``).
    """

    def __init__(
        self,
        device: torch.device | str | None,
        input_size: int,
        hidden_size: int,
        num_units: int,
        k: int,
        rnn_cell: Literal["LSTM", "GRU"] = "LSTM",
        n_layers: int = 1,
        bidirectional: bool = False,
        *,
        batch_first: bool = False,
        init_state: Literal["zeros", "random"] = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"RIM: n_layers must be >= 1, got {n_layers}")
        if init_state not in ("zeros", "random"):
            raise ValueError(f"RIM: init_state must be 'zeros' or 'random', got {init_state!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_units = num_units
        self.k = k
        self.rnn_cell = rnn_cell
        self.n_layers = n_layers
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.batch_first = batch_first
        self.init_state = init_state
        width = num_units * hidden_size
        cells = []
        for layer in range(n_layers):
            size = input_size if layer == 0 else self.num_directions * width
            for _ in range(self.num_directions):
                cells.append(RIMCell(None, size, hidden_size, num_units, k, rnn_cell, **kwargs))
        self.cells = nn.ModuleList(cells)
        if device is not None:
            self.to(device)

    @property
    def is_lstm(self) -> bool:
        """True for LSTM units, False for GRU units."""
        return self.rnn_cell == "LSTM"

    def forward(
        self,
        x: Tensor,
        h: Tensor | None = None,
        c: Tensor | None = None,
        *,
        return_info: bool = False,
    ) -> tuple[Any, ...]:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
            raise ValueError(
                f"RIM: x must be {layout} with {self.input_size} features, got {tuple(x.shape)}"
            )
        if self.batch_first:
            x = x.transpose(0, 1)
        batch = x.shape[1]
        h, c = self._states(h, c, batch, x)
        n, hid = self.num_units, self.hidden_size
        h_final: list[Tensor] = []
        c_final: list[Tensor] = []
        infos: list[RIMStepInfo] = []
        layer_input = x
        for layer in range(self.n_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                cell = self.cells[index]
                assert isinstance(cell, RIMCell)
                h0 = h[index].reshape(batch, n, hid)
                c0 = c[index].reshape(batch, n, hid) if c is not None else None
                out, h_t, c_t, info = cell.forward_sequence(
                    layer_input, h0, c0, reverse=direction == 1, return_info=return_info
                )
                outputs.append(out.reshape(out.shape[0], batch, n * hid))
                h_final.append(h_t.reshape(batch, n * hid))
                if c_t is not None:
                    c_final.append(c_t.reshape(batch, n * hid))
                if info is not None:
                    infos.append(_batch_major(info) if self.batch_first else info)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
        output = layer_input.transpose(0, 1) if self.batch_first else layer_input
        result: list[Any] = [output, torch.stack(h_final)]
        if self.is_lstm:
            result.append(torch.stack(c_final))
        if return_info:
            result.append(infos)
        return tuple(result)

    def _states(
        self, h: Tensor | None, c: Tensor | None, batch: int, x: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        shape = (self.n_layers * self.num_directions, batch, self.num_units * self.hidden_size)
        make = torch.randn if self.init_state == "random" else torch.zeros
        if h is None:
            h = make(shape, device=x.device, dtype=x.dtype)
        if self.is_lstm and c is None:
            c = make(shape, device=x.device, dtype=x.dtype)
        if not self.is_lstm and c is not None:
            raise ValueError("RIM: c was given but rnn_cell is 'GRU' (no cell state)")
        for name, state in (("h", h), ("c", c)):
            if state is not None and tuple(state.shape) != shape:
                hint = (
                    "; is x batch-first? pass batch_first=True"
                    if not self.batch_first and state.dim() == 3 and state.shape[1] == x.shape[0]
                    else ""
                )
                raise ValueError(
                    f"RIM: {name} must be (layers*directions, batch, N*H) = {shape}, got "
                    f"{tuple(state.shape)}{hint}"
                )
        return h, c


def _batch_major(info: RIMStepInfo) -> RIMStepInfo:
    """Step info with ``(batch, time)`` leading axes instead of ``(time, batch)``."""
    return RIMStepInfo(*(t.transpose(0, 1) for t in info))
