"""The CompILE model of the toy task: masked LSTM encoder, boundaries, latents, decoder.

Shapes: B batch, T padded length, M segments, V = S + 1 vocabulary, H hidden, D latent.

Forward pass (the original's order; one shared set of layers for all segments)::

    embed -> for m = 0..M-1:
        E_m = LSTM over the whole padded sequence, state multiplied by the mask w_m after
              every step (w_0 = 1)
        b_m = boundary: Gumbel-softmax over positions of BoundaryHead(E_m) (training) or
              its argmax (evaluation), position 0 forbidden; the last one is fixed at L - 1
        z_m = latent read out from E_m just before the boundary (Gaussian or concrete)
        w_{m+1} = prod_{j<=m} (cumsum(b_j) + eps)      (positions not yet explained)
        rec_m = Decoder(z_m): one distribution over symbols for the whole segment

Noise is drawn from torch's global generator on the model's device, in a fixed order per
segment (boundary Gumbel noise, then latent noise), so a seeded run is reproducible.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from compile_seg.config import DataConfig, ModelConfig
from compile_seg.lstm import masked_lstm_tokens

EPS = 1e-17
"""The original's epsilon inside logs (Gumbel noise, masks, KL terms)."""
NEG_INF = -1e30
"""The original's logit for forbidden boundary positions (float32 only)."""


def gumbel_noise(shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
    """Gumbel(0, 1) noise ``-log(eps - log(u + eps))``, ``u ~ U(0, 1)`` (the original's form)."""
    u = torch.rand(shape, device=device)
    return -torch.log(EPS - torch.log(u + EPS))


@dataclasses.dataclass
class CompILEOutput:
    """Everything a forward pass produces, one list entry per segment m = 0..M-1.

    Attributes:
        encodings: ``(B, T, H)`` masked encoder states E_m.
        boundary_logits: ``(B, T)`` logits (position 0 = -1e30), ``None`` for the last segment.
        boundaries: ``(B, T)`` samples b_m: relaxed one-hot (training) or one-hot (eval).
        encoder_masks: ``(B, T)`` mask w_m the encoder ran with (w_0 = 1).
        latent_logits: ``(B, 2D)`` Gaussian (mean, log-variance) or ``(B, D)`` concrete logits.
        latents: ``(B, D)`` samples z_m (the mean / one-hot argmax in evaluation).
        reconstructions: ``(B, V)`` decoder logits rec_m (the same at every position).
    """

    encodings: list[torch.Tensor]
    boundary_logits: list[torch.Tensor | None]
    boundaries: list[torch.Tensor]
    encoder_masks: list[torch.Tensor]
    latent_logits: list[torch.Tensor]
    latents: list[torch.Tensor]
    reconstructions: list[torch.Tensor]


class CompILE(nn.Module):
    """CompILE for the toy segmentation task (PyTorch default initialisation everywhere).

    Args:
        input_dim: V = number of symbols + 1 (token 0 is EOS/padding).
        hidden_dim: H.
        latent_dim: D.
        max_num_segments: M.
        latent_dist: ``"gaussian"`` or ``"concrete"``.
        temp_b: Gumbel-softmax temperature of the boundaries.
        temp_z: temperature of concrete latents.
        mask_padding: improvement over the original: boundary logits at positions
            ``t >= length`` are set to -1e30 so a boundary never lands in padding.

    Parameter names and layouts (``embed``, ``lstm_cell`` as a ``torch.nn.LSTMCell``,
    ``head_b``, ``head_z``, ``decoder``) are plain PyTorch modules; the encoder loop uses
    :func:`compile_seg.lstm.masked_lstm` on the cell's weights.
    """

    gate_scale: torch.Tensor

    def __init__(
        self,
        input_dim: int = 6,
        hidden_dim: int = 64,
        latent_dim: int = 32,
        max_num_segments: int = 3,
        latent_dist: str = "gaussian",
        temp_b: float = 1.0,
        temp_z: float = 1.0,
        mask_padding: bool = False,
    ) -> None:
        super().__init__()
        if latent_dist not in ("gaussian", "concrete"):
            raise ValueError(f"latent_dist must be 'gaussian' or 'concrete', got {latent_dist!r}")
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.latent_dim = latent_dim
        self.max_num_segments = max_num_segments
        self.latent_dist = latent_dist
        self.temp_b = temp_b
        self.temp_z = temp_z
        self.mask_padding = mask_padding

        self.embed = nn.Embedding(input_dim, hidden_dim)
        self.lstm_cell = nn.LSTMCell(hidden_dim, hidden_dim)
        self.head_b = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1)
        )
        latent_out = 2 * latent_dim if latent_dist == "gaussian" else latent_dim
        self.head_z = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, latent_out)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, input_dim)
        )
        gate_scale = torch.ones(4 * hidden_dim)
        gate_scale[2 * hidden_dim : 3 * hidden_dim] = 2.0
        self.register_buffer("gate_scale", gate_scale, persistent=False)

    def projection_table(self) -> torch.Tensor:
        """``(V, 4H)`` LSTM input projection of every token, cell-gate block doubled.

        Embedding followed by the input-to-hidden product is linear in the one-hot token, so
        the projections of a sequence are rows of ``embed.weight @ W_ih^T + b_ih + b_hh``;
        computed once per forward and shared by all M encoder passes.
        """
        cell = self.lstm_cell
        table = torch.addmm(cell.bias_ih + cell.bias_hh, self.embed.weight, cell.weight_ih.t())
        return table * self.gate_scale

    def input_projections(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(T, B, 4H)`` LSTM input projections of ``(B, T)`` tokens, cell gate doubled."""
        return F.embedding(inputs.t(), self.projection_table())

    def encode(
        self,
        table: torch.Tensor,
        inputs: torch.Tensor,
        mask: torch.Tensor | None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """One masked encoder pass.

        Args:
            table: ``(V, 4H)`` from :meth:`projection_table`.
            inputs: ``(B, T)`` tokens.
            mask: ``(T, B)`` soft mask w_m, or ``None`` for w = 1 (the first segment).
            steps: encode only positions ``0..steps-1`` (later rows are zero).

        Returns:
            ``(T, B, H)`` masked hidden states.
        """
        whh = self.lstm_cell.weight_hh * self.gate_scale.unsqueeze(1)
        return masked_lstm_tokens(table, inputs, mask, whh, steps)

    def boundary_logits(self, encodings: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` boundary logits from ``(T, B, H)`` encodings; position 0 forbidden."""
        steps, batch, _ = encodings.shape
        logits = encodings.new_full((batch, steps), NEG_INF)
        # Position 0 is overwritten anyway, so the head only runs on positions 1..T-1.
        logits[:, 1:] = self.head_b(encodings[1:]).squeeze(2).t()
        if self.mask_padding:
            positions = torch.arange(steps, device=encodings.device)
            logits = logits.masked_fill(positions.unsqueeze(0) >= lengths.unsqueeze(1), NEG_INF)
        return logits

    def sample_latent(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` latent sample from the latent head's ``logits``."""
        if self.latent_dist == "gaussian":
            mu, log_var = logits.split(self.latent_dim, dim=1)
            if not self.training:
                return mu
            return mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        if not self.training:
            return F.one_hot(logits.argmax(1), self.latent_dim).to(logits.dtype)
        noise = gumbel_noise(tuple(logits.shape), logits.device)
        return F.softmax((logits + noise) / self.temp_z, dim=1)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> CompILEOutput:
        """Run all M segments.

        Args:
            inputs: ``(B, T)`` int64 tokens (0 = EOS/padding).
            lengths: ``(B,)`` int64 lengths including the EOS (``2 <= lengths <= T``).

        Returns:
            The per-segment outputs; see :class:`CompILEOutput`.
        """
        if inputs.dim() != 2 or lengths.shape != inputs.shape[:1]:
            raise ValueError(
                f"inputs must be (B, T) and lengths (B,), got {tuple(inputs.shape)} and "
                f"{tuple(lengths.shape)}"
            )
        batch, steps = inputs.shape
        table = self.projection_table()
        mask = table.new_ones(batch, steps)
        log_mask = None
        out = CompILEOutput([], [], [], [], [], [], [])
        for m in range(self.max_num_segments):
            last = m == self.max_num_segments - 1
            # The last segment's readout is at position L - 2 <= T - 2, and it has no boundary
            # logits, so its pass stops one position early (its row T - 1 is zero).
            mask_t = None if m == 0 else mask.t().contiguous()
            encodings = self.encode(table, inputs, mask_t, steps - 1 if last else None)  # (T, B, H)
            if last:
                logits_b = None
                b = F.one_hot(lengths - 1, steps).to(table.dtype)
            else:
                logits_b = self.boundary_logits(encodings, lengths)
                if self.training:
                    noise = gumbel_noise((batch, steps), logits_b.device)
                    b = F.softmax((logits_b + noise) / self.temp_b, dim=1)
                else:
                    b = F.one_hot(logits_b.argmax(1), steps).to(logits_b.dtype)
            # State just before the boundary: sum_t E[t] * b[t + 1].
            readout = (encodings[:-1] * b[:, 1:].t().unsqueeze(2)).sum(0)
            logits_z = self.head_z(readout)
            z = self.sample_latent(logits_z)
            out.encodings.append(encodings.transpose(0, 1))
            out.boundary_logits.append(logits_b)
            out.boundaries.append(b)
            out.encoder_masks.append(mask)
            out.latent_logits.append(logits_z)
            out.latents.append(z)
            out.reconstructions.append(self.decoder(z))
            if not last:
                step_log = torch.log(torch.cumsum(b, dim=1) + EPS)
                log_mask = step_log if log_mask is None else log_mask + step_log
                mask = torch.exp(log_mask)
        return out


def build_model(model: ModelConfig, data: DataConfig) -> CompILE:
    """A :class:`CompILE` from the model and data configurations."""
    return CompILE(
        input_dim=data.num_symbols + 1,
        hidden_dim=model.hidden_dim,
        latent_dim=model.latent_dim,
        max_num_segments=data.num_segments,
        latent_dist=model.latent_dist,
        temp_b=model.temp_b,
        temp_z=model.temp_z,
        mask_padding=model.mask_padding,
    )
