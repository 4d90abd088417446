"""The stage-1 program VAE (learning spec §1): encoder, decoder, μ / log σ and neural executor.

Shapes: B programs, T = 45 decoder steps, D = 10 demos per program, S executor steps,
H = hidden = latent size (256), states are ``[16, h, w]`` float (channels first).
Token ids are the engine's (`leaps_karel.dsl`), pad = 50; action ids are the world's
(0 move, 1 turnLeft, 2 turnRight, 3 pickMarker, 4 putMarker) and 5 = end / no-op.
"""

from __future__ import annotations

import math
from typing import cast

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

    def encode_states(self, states: Tensor) -> Tensor:
        """``[N, S, 16, h, w]`` float states → ``[N, S, H]`` embeddings."""
        n, s = states.shape[:2]
        return self.state_encoder(states.reshape(n * s, *states.shape[2:])).reshape(n, s, -1)

    def run(
        self, z: Tensor, emb: Tensor, prev_actions: Tensor, hidden: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The GRU and head over given state embeddings and previous actions.

        Args:
            z: ``[N, H]``.
            emb: ``[N, S, H]`` state embeddings.
            prev_actions: ``[N, S]`` long.
            hidden: ``[1, N, H]`` GRU state to continue from (default: z).

        Returns:
            ``[N, S, 6]`` logits and the final ``[1, N, H]`` GRU state.
        """
        n, s = prev_actions.shape
        x = torch.cat([z[:, None].expand(n, s, -1), emb, self.action_embed(prev_actions)], -1)
        out, last = self.gru(x, z[None].contiguous() if hidden is None else hidden)
        return self.head(out), cast(Tensor, last)

    def forward(self, z: Tensor, states: Tensor, prev_actions: Tensor) -> Tensor:
        """Teacher-forced logits.

        Args:
            z: ``[N, H]`` latent per rollout (repeat it over a program's demos).
            states: ``[N, S, 16, h, w]`` float input states.
            prev_actions: ``[N, S]`` long previous actions (5 at step 0).

        Returns:
            ``[N, S, 6]`` action logits.
        """
        return self.run(z, self.encode_states(states), prev_actions)[0]

    def teacher_forced(
        self, z: Tensor, s0: Tensor, actions: Tensor, environment: bool, max_steps: int
    ) -> tuple[Tensor, Tensor]:
        """Teacher-forced rollout of spec §3.3, only as long as the loss mask can reach.

        The ground-truth action is fed back and (``environment``) stepped in the simulator.
        The first chunk covers every demo's actions and its end target; further steps (the
        state then stays fixed, the fed action is the no-op 5 and the target is 5) are run
        only while some row has not yet predicted the end, up to ``max_steps`` — positions
        after that are outside the union mask, so the loss equals a ``max_steps`` rollout.

        Args:
            z: ``[N, H]``.
            s0: ``[N, 16, h, w]`` float initial states.
            actions: ``[N, A]`` long ground-truth actions padded with 5.
            environment: step the states (else the input stays s0).
            max_steps: the horizon (99 in the original).

        Returns:
            logits ``[N, S, 6]`` and targets ``[N, S]`` (S ≤ max_steps).
        """
        n, width = actions.shape
        real = (actions < END_ACTION).sum(-1)
        first = min(max_steps, int(real.max()) + 1)
        if width < first:
            pad = actions.new_full((n, first - width), END_ACTION)
            actions = torch.cat([actions, pad], 1)
        targets = actions[:, :first]
        states = [s0]
        for t in range(first - 1):
            states.append(step_states(states[-1], targets[:, t]) if environment else s0)
        last = step_states(states[-1], targets[:, -1]) if environment else s0
        prev = torch.cat([targets.new_full((n, 1), END_ACTION), targets[:, :-1]], 1)
        logits, hidden = self.run(z, self.encode_states(torch.stack(states, 1)), prev)
        all_logits, all_targets = [logits], [targets]
        steps = first
        ended = (logits.argmax(-1) >= END_ACTION).any(-1)
        if steps < max_steps and not bool(ended.all()):
            emb_last = self.state_encoder(last)[:, None]
            while steps < max_steps and not bool(ended.all()):
                # Constant inputs: run the continuation in doubling chunks (extra positions
                # past a row's first predicted end are outside the mask).
                k = min(max_steps - steps, max(8, steps))
                prev_end = targets.new_full((n, k), END_ACTION)
                out, hidden = self.run(z, emb_last.expand(n, k, -1), prev_end, hidden)
                all_logits.append(out)
                all_targets.append(prev_end)
                ended = ended | (out.argmax(-1) >= END_ACTION).any(-1)
                steps += k
        return torch.cat(all_logits, 1), torch.cat(all_targets, 1)

    def rollout(
        self, z: Tensor, s0: Tensor, steps: int, environment: bool, min_steps: int = 0
    ) -> tuple[Tensor, Tensor]:
        """Greedy rollout (argmax actions fed back; states stepped when ``environment``).

        Stops early once every row has predicted the end (5) and ``min_steps`` steps ran.

        Args:
            z: ``[N, H]``.
            s0: ``[N, 16, h, w]`` float initial states.
            steps: S, the horizon.
            environment: step the simulator with the predicted actions (else keep s0).
            min_steps: run at least this many steps.

        Returns:
            logits ``[N, S', 6]`` and actions ``[N, S']`` long (S' ≤ S).
        """
        state, hidden = s0, z[None].contiguous()
        prev = torch.full((z.shape[0],), END_ACTION, dtype=torch.long, device=z.device)
        ended = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
        logits, actions = [], []
        for t in range(steps):
            emb = self.state_encoder(state)[:, None]
            out, hidden = self.run(z, emb, prev[:, None], hidden)
            prev = out[:, 0].argmax(-1)
            logits.append(out[:, 0])
            actions.append(prev)
            ended = ended | (prev >= END_ACTION)
            if t + 1 >= min_steps and bool(ended.all()):
                break
            if environment:
                state = step_states(state, prev)
        return torch.stack(logits, 1), torch.stack(actions, 1)


def upto_end(pred: Tensor) -> Tensor:
    """``[N, S]`` bool: positions up to and including the first predicted end action."""
    ended = (pred >= END_ACTION).long()
    return (torch.cumsum(ended, -1) - ended) == 0


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
    def sample_z(mu: Tensor, log_sigma: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised ``z = μ + σ ⊙ ε`` ``[B, H]`` (ε from ``generator`` if given)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(log_sigma) * eps

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
