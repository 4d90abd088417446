"""``compile-seg bench``: this implementation against a straightforward reference.

The reference (:class:`ReferenceCompILE`, :func:`reference_generate`,
:func:`reference_losses`, :func:`reference_rec_accuracy`) re-implements the original toy's
*approach*, written for this package: a Python loop over samples to generate data, an
``nn.LSTMCell`` stepped one position at a time under autograd (embedding and input product
recomputed in every pass), per-segment losses on the reconstruction repeated over time,
and a Python loop over samples for the accuracy metric. It computes the same function as
:class:`compile_seg.model.CompILE` (same parameter layout, same noise draws in the same
order); the tests check that both give the same losses and gradients.

Both are timed in the same process, interleaved repetition by repetition so that machine
load affects them alike; the medians and their ratios are printed, with the original's
published figures for context.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compile_seg.config import BenchConfig
from compile_seg.data import generate_batch
from compile_seg.losses import compute_losses
from compile_seg.metrics import evaluate_batch
from compile_seg.model import EPS, NEG_INF, CompILE, CompILEOutput, gumbel_noise
from compile_seg.perf import tune_allocator
from compkit_utils.errors import UserError

ORIGINAL_MS_PER_STEP = 75.0
"""The original's training step, as published in the method spec (2-core CPU, 2 threads)."""
ORIGINAL_MS_PER_EVAL = 140.0
"""The original's evaluation (eval forward + Python-loop metric), same source."""


def reference_generate(
    rng: np.random.Generator,
    batch_size: int,
    num_symbols: int = 5,
    num_segments: int = 3,
    max_segment_len: int = 5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample Python-loop generator (same distribution as :func:`generate_batch`).

    Returns:
        ``(inputs (B, T), lengths (B,))`` int64 tensors.
    """
    sequences = []
    for _ in range(batch_size):
        symbols = rng.choice(np.arange(1, num_symbols + 1), num_segments, replace=False)
        run_lengths = rng.choice(np.arange(1, max_segment_len), num_segments, replace=True)
        tokens: list[int] = []
        for symbol, run in zip(symbols, run_lengths, strict=True):
            tokens += [int(symbol)] * int(run)
        tokens.append(0)
        sequences.append(torch.tensor(tokens, dtype=torch.int64))
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
    inputs = nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=0)
    return inputs, lengths


class ReferenceCompILE(CompILE):
    """The same model stepped naively: ``nn.LSTMCell`` per position, per segment, under autograd.

    Shares :class:`CompILE`'s parameters and noise order, so a state dict loads into either.
    """

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> CompILEOutput:
        batch, steps = inputs.shape
        embeddings = self.embed(inputs)
        mask = torch.ones(batch, steps, device=inputs.device)
        log_mask = torch.zeros(batch, steps, device=inputs.device)
        out = CompILEOutput([], [], [], [], [], [], [])
        for m in range(self.max_num_segments):
            h = torch.zeros(batch, self.hidden_dim, device=inputs.device)
            c = torch.zeros(batch, self.hidden_dim, device=inputs.device)
            states = []
            for t in range(steps):
                h, c = self.lstm_cell(embeddings[:, t], (h, c))
                h = h * mask[:, t].unsqueeze(1)
                c = c * mask[:, t].unsqueeze(1)
                states.append(h)
            encodings = torch.stack(states, dim=1)  # (B, T, H)
            if m == self.max_num_segments - 1:
                logits_b = None
                b = F.one_hot(lengths - 1, steps).float()
            else:
                logits_b = self.head_b(encodings).squeeze(2).clone()
                logits_b[:, 0] = NEG_INF
                if self.mask_padding:
                    pad = torch.arange(steps, device=inputs.device).unsqueeze(0) >= lengths[:, None]
                    logits_b = logits_b.masked_fill(pad, NEG_INF)
                if self.training:
                    noise = gumbel_noise((batch, steps), inputs.device)
                    b = F.softmax((logits_b + noise) / self.temp_b, dim=1)
                else:
                    b = F.one_hot(logits_b.argmax(1), steps).float()
            readout = (encodings[:, :-1] * b[:, 1:].unsqueeze(2)).sum(1)
            logits_z = self.head_z(readout)
            z = self.sample_latent(logits_z)
            out.encodings.append(encodings)
            out.boundary_logits.append(logits_b)
            out.boundaries.append(b)
            out.encoder_masks.append(mask)
            out.latent_logits.append(logits_z)
            out.latents.append(z)
            out.reconstructions.append(self.decoder(z))
            if m < self.max_num_segments - 1:
                log_mask = log_mask + torch.log(torch.cumsum(b, dim=1) + EPS)
                mask = torch.exp(log_mask)
        return out


def reference_losses(
    out: CompILEOutput, inputs: torch.Tensor, latent_dist: str = "gaussian"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The original's objective with the original's defaults, written per segment.

    Returns:
        ``(total, nll)`` 0-d tensors.
    """
    batch, steps = inputs.shape
    num_segments = len(out.boundaries)
    nll = inputs.new_zeros((), dtype=torch.float32)
    kl_z = inputs.new_zeros((), dtype=torch.float32)
    for m in range(num_segments):
        b = out.boundaries[m]
        seg_prob = 1.0 - torch.cumsum(b, dim=1)
        if m > 0:
            seg_prob = seg_prob * out.encoder_masks[m]
        logits = out.reconstructions[m].unsqueeze(1).expand(batch, steps, -1)
        ce = F.cross_entropy(
            logits.reshape(batch * steps, -1), inputs.reshape(-1), reduction="none"
        ).view(batch, steps)
        nll = nll + (ce * seg_prob)[:, :-1].sum(1).mean()
        latent_logits = out.latent_logits[m]
        if latent_dist == "gaussian":
            mu, log_var = latent_logits.chunk(2, dim=1)
            kl = -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum(1)
        else:
            probs = F.softmax(latent_logits, dim=1)
            kl = (probs * torch.log(probs + EPS)).sum(1)
        kl_z = kl_z + kl.mean()
    first = out.boundary_logits[0]
    assert first is not None
    probs_b = F.softmax(first, dim=1)
    k = torch.arange(1, steps + 1, dtype=torch.float32, device=inputs.device)
    log_prior = F.log_softmax(k * np.log(3.0) - 3.0 - torch.lgamma(k + 1), dim=0)
    kl_b = (probs_b[:, 1:] * (torch.log(probs_b[:, 1:] + EPS) - log_prior[1:])).sum(1).mean()
    total = nll + 0.1 * kl_z + 0.1 * num_segments * kl_b
    return total, nll


def reference_rec_accuracy(out: CompILEOutput, inputs: torch.Tensor) -> float:
    """The metric with a Python loop over samples (section 5 of the method spec)."""
    batch = inputs.shape[0]
    accuracies = []
    for i in range(batch):
        prev = 0
        reconstruction: list[int] = []
        for b, logits in zip(out.boundaries, out.reconstructions, strict=True):
            pos = max(int(torch.argmax(b[i])), prev)
            symbol = int(torch.argmax(logits[i]))
            reconstruction += [symbol] * (pos - prev)
            prev = pos
        target = inputs[i, : len(reconstruction)].tolist()
        hits = sum(int(a == t) for a, t in zip(reconstruction, target, strict=True))
        accuracies.append(hits / len(reconstruction))
    return float(np.mean(accuracies))


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000.0


def run_bench(cfg: BenchConfig, print_fn: Callable[[str], None] = print) -> dict[str, float]:
    """Time training steps and evaluations of both implementations; print a table.

    Returns:
        Medians in milliseconds: ``ours_step``, ``ours_eval``, ``ours_data``, and with the
        reference also ``ref_step``, ``ref_eval``, ``ref_data``.
    """
    from compile_seg import lstm
    from compkit_utils.devices import pick_device, set_threads
    from compkit_utils.seeding import seed_everything

    threads = set_threads(cfg.threads)
    tune_allocator()
    device = pick_device(cfg.device)
    if cfg.contended and device.type != "cpu":
        raise UserError(f"--contended times CPU threads; use --device cpu, not {device.type}")
    try:
        lstm.set_backend(cfg.kernels)
    except RuntimeError as exc:
        raise UserError(f"--kernels native: {exc}") from exc
    rng = seed_everything(cfg.seed)
    ours = CompILE(latent_dist=cfg.latent_dist).to(device)
    ref = ReferenceCompILE(latent_dist=cfg.latent_dist).to(device)
    ref.load_state_dict(ours.state_dict())
    opt_ours = torch.optim.Adam(ours.parameters(), lr=1e-2)
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-2)
    eval_batch = generate_batch(np.random.default_rng(cfg.seed + 1), cfg.batch_size)
    eval_inputs, eval_lengths, eval_bounds = eval_batch.to_torch(device)

    def ours_step() -> None:
        x, lengths, _ = generate_batch(rng, cfg.batch_size).to_torch(device)
        ours.train()
        out = ours(x, lengths)
        loss = compute_losses(out, x, latent_dist=cfg.latent_dist).total
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        opt_ours.step()

    def ours_eval() -> None:
        evaluate_batch(ours, eval_inputs, eval_lengths, eval_bounds)

    def ref_step() -> None:
        x, lengths = reference_generate(rng, cfg.batch_size)
        x, lengths = x.to(device), lengths.to(device)
        ref.train()
        loss, _ = reference_losses(ref(x, lengths), x, cfg.latent_dist)
        opt_ref.zero_grad()
        loss.backward()
        opt_ref.step()

    def ref_eval() -> None:
        ref.eval()
        with torch.no_grad():
            reference_rec_accuracy(ref(eval_inputs, eval_lengths), eval_inputs)

    jobs: dict[str, Callable[[], object]] = {
        "ours_step": ours_step,
        "ours_eval": ours_eval,
        "ours_data": lambda: generate_batch(rng, cfg.batch_size).to_torch(device),
    }
    if not cfg.skip_reference:
        jobs |= {
            "ref_step": ref_step,
            "ref_eval": ref_eval,
            "ref_data": lambda: reference_generate(rng, cfg.batch_size),
        }
    samples: dict[str, list[float]] = {name: [] for name in jobs}
    for rep in range(cfg.warmup + cfg.repeats):
        for name, job in jobs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            job()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if rep >= cfg.warmup:
                samples[name].append(time.perf_counter() - start)
    result = {name: _median_ms(values) for name, values in samples.items()}

    kernels = lstm.active_backend(torch.empty(1, 1, 4 * ours.hidden_dim, device=device))
    print_fn(
        f"compile-seg bench: batch {cfg.batch_size}, {cfg.latent_dist} latents, device "
        f"{device.type}, {threads} thread(s), {kernels} encoder kernels, median of "
        f"{cfg.repeats} (after {cfg.warmup} warm-up)"
    )
    header = f"{'':<26}{'ours':>10}"
    if not cfg.skip_reference:
        header += f"{'reference':>12}{'speed-up':>10}"
    print_fn(header)
    rows = [
        ("train step (ms)", "step"),
        ("  data generation (ms)", "data"),
        ("evaluation (ms)", "eval"),
    ]
    for label, key in rows:
        line = f"{label:<26}{result['ours_' + key]:>10.2f}"
        if not cfg.skip_reference:
            ref_ms = result["ref_" + key]
            line += f"{ref_ms:>12.2f}{ref_ms / result['ours_' + key]:>9.1f}x"
        print_fn(line)
    print_fn(
        f"original (published in the method spec, 2-core CPU, not measured here): "
        f"{ORIGINAL_MS_PER_STEP:.0f} ms/step, {ORIGINAL_MS_PER_EVAL:.0f} ms/eval; ours vs those: "
        f"{ORIGINAL_MS_PER_STEP / result['ours_step']:.1f}x, "
        f"{ORIGINAL_MS_PER_EVAL / result['ours_eval']:.1f}x"
    )
    if cfg.contended:
        contended = {"step": jobs["ours_step"], "eval": jobs["ours_eval"]}
        result |= run_contended(contended, cfg.threads, cfg.repeats, cfg.warmup, print_fn)
    return result


def run_contended(
    jobs: dict[str, Callable[[], object]],
    threads: int | None,
    repeats: int,
    warmup: int,
    print_fn: Callable[[str], None] = print,
) -> dict[str, float]:
    """Time ``jobs`` beside one busy process: default thread count, 1 thread, all cores.

    The default count is chosen while the busy process runs, as a run started then would
    choose it (``threads`` if given, else :func:`compkit_utils.devices.auto_threads`).

    Returns:
        ``contended_<job>_default``, ``contended_<job>_1``, ``contended_<job>_all`` (median
        ms), ``contended_<job>_ratio`` (default / 1 thread) and ``contended_threads``.
    """
    import os

    from compkit_utils.devices import auto_threads, busy_process, time_thread_counts, usable_cpus

    cores = len(usable_cpus())
    with busy_process():
        chosen, reason = (threads, "--threads") if threads else auto_threads()
        load = os.getloadavg()[0]
        counts = {"default": chosen, "1": 1, "all": cores}
        times = time_thread_counts(jobs, counts, repeats, warmup)
    print_fn(
        f"contended: beside 1 busy process (load average {load:.2f}), the default thread "
        f"count is {chosen} ({reason}); median of {repeats}, each setting timed separately"
    )
    print_fn(
        f"{'':<26}{f'default ({chosen})':>12}{'1 thread':>10}{f'{cores} threads':>11}"
        f"{'default/1 thread':>18}"
    )
    out: dict[str, float] = {"contended_threads": float(chosen)}
    labels = {"step": "train step (ms)", "eval": "evaluation (ms)"}
    for name, per in times.items():
        ratio = per["default"] / per["1"]
        out |= {f"contended_{name}_{key}": ms for key, ms in per.items()}
        out[f"contended_{name}_ratio"] = ratio
        print_fn(
            f"{labels.get(name, name):<26}{per['default']:>12.2f}{per['1']:>10.2f}"
            f"{per['all']:>11.2f}{ratio:>17.2f}x"
        )
    if chosen == 1:
        print_fn("(the default is 1 thread here: its two columns differ by timing noise only)")
    return out
