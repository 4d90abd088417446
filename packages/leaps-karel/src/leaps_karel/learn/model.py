"""The stage-1 program VAE (learning spec §1): encoder, decoder, μ / log σ and neural executor.

Shapes: B programs, T = 45 decoder steps, D = 10 demos per program, S executor steps,
H = hidden = latent size (256), states are ``[16, h, w]`` float (channels first).
Token ids are the engine's (`leaps_karel.dsl`), pad = 50; action ids are the world's
(0 move, 1 turnLeft, 2 turnRight, 3 pickMarker, 4 putMarker) and 5 = end / no-op.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from leaps_karel.dsl import VOCAB
from leaps_karel.learn.grammar import VOCAB_SIZE, GrammarState, teacher_masks
from leaps_karel.learn.pretrain_config import ModelConfig

__all__ = ["NUM_ACTIONS", "Executor", "ProgramVAE", "step_states"]

PAD = VOCAB_SIZE - 1
DEF = VOCAB["DEF"]
#: Action classes of the executor: 5 actions + end / no-op (5).
NUM_ACTIONS = 6
END_ACTION = 5
_DR = (-1, 0, 1, 0)
_DC = (0, 1, 0, -1)


def _orthogonal(module: nn.Module, gain: float = 1.0) -> None:
    for name, param in module.named_parameters():
        if "weight" in name and param.dim() >= 2:
            nn.init.orthogonal_(param, gain=gain)
        elif "bias" in name:
            nn.init.zeros_(param)


def mask_logits(logits: Tensor, allowed: Tensor) -> Tensor:
    """Grammar-masked logits: forbidden entries become the most negative float of the dtype."""
    return logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)


class Executor(nn.Module):
    """Latent-conditioned neural executor π(a | z, s) (spec §1.3)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        h, w = cfg.executor_hw
        self.state_encoder = nn.Sequential(
            nn.Conv2d(16, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * (h - 4) * (w - 4), cfg.hidden),
            nn.ReLU(),
        )
        self.action_embed = nn.Embedding(NUM_ACTIONS, NUM_ACTIONS)
        self.gru = nn.GRU(2 * cfg.hidden + NUM_ACTIONS, cfg.hidden, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.Tanh(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.Tanh(),
            nn.Linear(cfg.hidden, NUM_ACTIONS),
        )
        _orthogonal(self.state_encoder, nn.init.calculate_gain("relu"))
        _orthogonal(self.gru)

    def forward(self, z: Tensor, states: Tensor, prev_actions: Tensor) -> Tensor:
        """Teacher-forced logits.

        Args:
            z: ``[N, H]`` latent per rollout (repeat it over a program's demos).
            states: ``[N, S, 16, h, w]`` float input states.
            prev_actions: ``[N, S]`` long previous actions (5 at step 0).

        Returns:
            ``[N, S, 6]`` action logits.
        """
        n, s = prev_actions.shape
        emb = self.state_encoder(states.reshape(n * s, *states.shape[2:])).reshape(n, s, -1)
        x = torch.cat([z[:, None].expand(n, s, -1), emb, self.action_embed(prev_actions)], -1)
        out, _ = self.gru(x, z[None].contiguous())
        return self.head(out)

    def rollout(
        self, z: Tensor, s0: Tensor, steps: int, environment: bool
    ) -> tuple[Tensor, Tensor]:
        """Greedy rollout (argmax actions fed back; states stepped when ``environment``).

        Args:
            z: ``[N, H]``.
            s0: ``[N, 16, h, w]`` float initial states.
            steps: S.
            environment: step the simulator with the predicted actions (else keep s0).

        Returns:
            logits ``[N, S, 6]`` and actions ``[N, S]`` long.
        """
        state, hidden = s0, z[None].contiguous()
        prev = torch.full((z.shape[0],), END_ACTION, dtype=torch.long, device=z.device)
        logits, actions = [], []
        for _ in range(steps):
            x = torch.cat([z, self.state_encoder(state), self.action_embed(prev)], -1)
            out, hidden = self.gru(x[:, None], hidden)
            step_logits = self.head(out[:, 0])
            prev = step_logits.argmax(-1)
            logits.append(step_logits)
            actions.append(prev)
            if environment:
                state = step_states(state, prev)
        return torch.stack(logits, 1), torch.stack(actions, 1)


class ProgramVAE(nn.Module):
    """Program encoder q(z|ρ), decoder p(ρ|z) and executor π(a|z, s) of LEAPS (spec §1).

    Args:
        cfg: sizes; `None` = the released model (hidden 256, 45 decoder steps).
    """

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        hid = cfg.hidden
        self.encoder = nn.ModuleDict(
            {
                "embed": nn.Embedding(VOCAB_SIZE, VOCAB_SIZE),
                "gru": nn.GRU(VOCAB_SIZE, hid, batch_first=True),
            }
        )
        self.mu = nn.Linear(hid, hid)
        self.log_sigma = nn.Linear(hid, hid)
        self.decoder = nn.ModuleDict(
            {
                "embed": nn.Embedding(VOCAB_SIZE, VOCAB_SIZE),
                "gru": nn.GRU(VOCAB_SIZE + hid, hid, batch_first=True),
                "head": nn.Sequential(
                    nn.Linear(2 * hid + VOCAB_SIZE, hid), nn.Tanh(), nn.Linear(hid, VOCAB_SIZE)
                ),
            }
        )
        self.executor = Executor(cfg)
        _orthogonal(self.encoder["gru"])
        _orthogonal(self.decoder["gru"])
        _orthogonal(self.decoder["head"], math.sqrt(2))

    # ------------------------------------------------------------------ encoder
    def encode(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """μ and log σ of q(z|ρ).

        Args:
            ids: ``[B, L]`` long programs (``DEF`` first, padded with 50).
            lengths: ``[B]`` long number of real tokens (``DEF`` … ``m)``).

        Returns:
            ``mu`` and ``log_sigma``, each ``[B, H]``.
        """
        out, _ = self.encoder["gru"](self.encoder["embed"](ids))
        rows = torch.arange(ids.shape[0], device=ids.device)
        h = out[rows, (lengths - 1).clamp(min=0)]  # the GRU state after the last real token
        return self.mu(h), self.log_sigma(h)

    @staticmethod
    def sample_z(mu: Tensor, log_sigma: Tensor) -> Tensor:
        """Reparameterised ``z = μ + σ ⊙ ε`` ``[B, H]``."""
        return mu + torch.exp(log_sigma) * torch.randn_like(mu)

    # ------------------------------------------------------------------ decoder
    def _head(self, out: Tensor, emb: Tensor, z: Tensor) -> Tensor:
        return self.decoder["head"](torch.cat([out, emb, z], -1))

    def decode_teacher(self, z: Tensor, ids: Tensor) -> Tensor:
        """Teacher-forced, grammar-masked logits.

        Args:
            z: ``[B, H]``.
            ids: ``[B, T + 1]`` long inputs (``DEF`` first, padded with 50); targets are
                ``ids[:, 1:]``.

        Returns:
            ``[B, T, 51]`` masked logits (forbidden tokens at the dtype's minimum).
        """
        inputs = ids[:, :-1]
        emb = self.decoder["embed"](inputs)
        zt = z[:, None].expand(-1, inputs.shape[1], -1)
        out, _ = self.decoder["gru"](torch.cat([emb, zt], -1), z[None].contiguous())
        return mask_logits(self._head(out, emb, zt), teacher_masks(ids))

    def decode(
        self, z: Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        """Grammar-masked decoding for ``cfg.decode_steps`` steps (argmax, or sampled).

        Args:
            z: ``[P, H]``.
            sample: draw tokens from the masked softmax instead of the argmax.
            generator: random generator for sampling.

        Returns:
            ``[P, T]`` long token ids, ``run`` first; after the first pad everything is pad.
        """
        p = z.shape[0]
        state = GrammarState(p, z.device)
        tok = torch.full((p,), DEF, dtype=torch.long, device=z.device)
        hidden = z[None].contiguous()
        out_tokens = []
        for _ in range(self.cfg.decode_steps):
            state.step(tok)
            emb = self.decoder["embed"](tok)
            out, hidden = self.decoder["gru"](torch.cat([emb, z], -1)[:, None], hidden)
            logits = mask_logits(self._head(out[:, 0], emb, z), state.allowed())
            if sample:
                probs = torch.softmax(logits.float(), -1)
                tok = torch.multinomial(probs, 1, generator=generator)[:, 0]
            else:
                tok = logits.argmax(-1)
            out_tokens.append(tok)
        return torch.stack(out_tokens, 1)

    @torch.no_grad()
    def decode_greedy(self, z: Tensor) -> Tensor:
        """Grammar-masked argmax decoding (spec §1.2): ``[P, 256]`` → ``[P, 45]`` long ids."""
        return self.decode(z)


def step_states(states: Tensor, actions: Tensor) -> Tensor:
    """One no-crash simulator step of a batch of state tensors (env spec §3).

    A blocked ``move`` turns the agent 180°, a failing ``pickMarker`` / ``putMarker`` does
    nothing, action ids ≥ 5 do nothing. Cells outside the grid count as walls.

    Args:
        states: ``[N, 16, h, w]`` float (or bool) states, channels first.
        actions: ``[N]`` long action ids.

    Returns:
        The next states, same dtype and shape (a new tensor).
    """
    n, _, h, w = states.shape
    dev = states.device
    rows = torch.arange(n, device=dev)
    flat = states[:, :4].reshape(n, -1).float().argmax(1)
    d, cell = flat // (h * w), flat % (h * w)
    r, c = cell // w, cell % w
    dr = torch.tensor(_DR, device=dev)[d]
    dc = torch.tensor(_DC, device=dev)[d]
    nr, nc = r + dr, c + dc
    inside = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
    nrc, ncc = nr.clamp(0, h - 1), nc.clamp(0, w - 1)
    free = inside & (states[rows, 4, nrc, ncc] == 0)
    move = actions == 0
    new_r = torch.where(move & free, nrc, r)
    new_c = torch.where(move & free, ncc, c)
    new_d = torch.where(move & ~free, (d + 2) % 4, d)
    new_d = torch.where(actions == 1, (d + 3) % 4, new_d)
    new_d = torch.where(actions == 2, (d + 1) % 4, new_d)
    markers = states[rows, 5:16, r, c]  # [N, 11]
    count = markers.float().argmax(1)
    pick = (actions == 3) & (count > 0)
    put = (actions == 4) & (count < 9)
    out = states.clone()
    out[rows, d, r, c] = 0
    out[rows, new_d, new_r, new_c] = 1
    changed = rows[pick | put]
    if changed.numel():
        new_count = (count - pick.long() + put.long())[changed]
        rc_, cc_ = r[changed], c[changed]
        for k in range(11):
            out[changed, 5 + k, rc_, cc_] = (new_count == k).to(out.dtype)
    return out
