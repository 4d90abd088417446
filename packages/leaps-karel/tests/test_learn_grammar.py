"""The grammar mask (learning spec §2) as a syntax checker, and greedy decoding under it."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from leaps_karel import dsl
from leaps_karel.config import DatasetConfig
from leaps_karel.dataset import generate_dataset
from leaps_karel.learn import grammar
from leaps_karel.learn.grammar import (
    GrammarState,
    accepts,
    check_ids,
    fill_empty_blocks,
    ids_to_program,
    teacher_masks,
)
from leaps_karel.learn.model import ProgramVAE
from leaps_karel.learn.pretrain_config import ModelConfig
from leaps_karel.reader import KarelProgramDataset
from leaps_karel.sampler import ProgramSampler

DATA = Path(__file__).parent / "data"


def _masks_admit(programs: list[list[int]]) -> None:
    """Each program's every next token is allowed by the batched mask (teacher forcing)."""
    width = max(len(p) for p in programs) + 1
    ids = torch.full((len(programs), width), grammar.PAD, dtype=torch.long)
    for i, p in enumerate(programs):
        ids[i, : len(p)] = torch.tensor(p)
    masks = teacher_masks(ids)  # [B, width - 1, 51]
    targets = ids[:, 1:]
    admitted = masks.gather(2, targets[:, :, None])[:, :, 0]
    bad = (~admitted).nonzero()
    assert bad.numel() == 0, dsl.ids_to_text(programs[int(bad[0, 0])])


def test_mask_admits_every_sampled_program() -> None:
    programs = [dsl.to_ids(p) for p in ProgramSampler(seed=3).sample_many(3000)]
    _masks_admit(programs)
    # ... and after m) only pad is allowed, forever.
    state = GrammarState(1)
    for tok in dsl.to_ids("DEF run m( move m)"):
        state.step(torch.tensor([tok]))
    for _ in range(3):
        assert state.allowed()[0].nonzero().flatten().tolist() == [grammar.PAD]
        state.step(torch.tensor([grammar.PAD]))
    assert bool(state.ok.item())


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    generate_dataset(out, DatasetConfig(num_programs=40, seed=11), shard_size=20)
    return out


def test_mask_admits_every_dataset_program(generated: Path, tmp_path: Path) -> None:
    original = tmp_path / "original"
    original.mkdir()
    sample = DATA / "dataset_sample"
    with gzip.open(sample / "data.hdf5.gz", "rb") as src, open(original / "data.hdf5", "wb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.copy(DATA / "dataset_sample" / "id.txt", original / "id.txt")
    for folder in (generated, original):
        ds = KarelProgramDataset(folder)
        programs = [ds[i]["program"].astype(int).tolist() for i in range(len(ds))]
        assert len(programs) >= 20
        _masks_admit(programs)


@pytest.mark.parametrize(
    "text",
    [
        "DEF run m( m) move",  # a token after m)
        "DEF run m( IF c( frontIsClear c) i( move i) ELSE e( move e) m)",  # ELSE after IF
        "DEF run m( IFELSE c( frontIsClear c) i( move i) move m)",  # IFELSE without ELSE
        "DEF run m( WHILE c( frontIsClear c) i( move i) m)",  # wrong body opener
        "DEF run m( REPEAT r( move r) m)",  # missing count
        "DEF run m( move w) m)",  # a closer that is not the innermost block's
        "DEF run m( WHILE c( move c) w( move w) m)",  # an action as condition
        "run m( move m)",  # DEF missing
    ],
)
def test_checker_rejects_non_programs(text: str) -> None:
    assert not check_ids(dsl.to_ids(text))


def test_checker_quirks_and_prefixes() -> None:
    # Empty blocks and nested not are accepted (quirks of the original mask).
    assert check_ids(dsl.to_ids("DEF run m( WHILE c( not c( not c( leftIsClear c) c) c) w( w) m)"))
    assert check_ids(dsl.to_ids("DEF run m( m)"))
    # A prefix of a program is accepted (the mask does not know the length limit).
    assert check_ids(dsl.to_ids("DEF run m( REPEAT R=3 r( move"))
    assert fill_empty_blocks("DEF run m( IF c( frontIsClear c) i( i) m)") == (
        "DEF run m( IF c( frontIsClear c) i( move i) m)"
    )


def test_greedy_decodes_parse_or_are_cut() -> None:
    torch.manual_seed(0)
    model = ProgramVAE(ModelConfig(hidden=32)).eval()
    complete = 0
    for scale in (0.1, 1.0, 5.0):
        ids = model.decode_greedy(scale * torch.randn(200, 32))
        assert ids.shape == (200, 45)
        assert ids.dtype == torch.long
        assert bool(accepts(torch.cat([torch.zeros(200, 1, dtype=torch.long), ids], 1)).all())
        for row in ids.tolist():
            text = ids_to_program(row)
            if grammar.PAD not in row:  # cut at 45 tokens: a valid prefix, never completed
                continue
            first = row.index(grammar.PAD)
            assert all(t == grammar.PAD for t in row[first:])
            assert text.endswith("m)")
            dsl.parse(fill_empty_blocks(text))  # raises if it does not parse
            complete += 1
    assert complete > 0


def test_sampled_decodes_obey_the_mask() -> None:
    torch.manual_seed(1)
    model = ProgramVAE(ModelConfig(hidden=16))
    gen = torch.Generator().manual_seed(0)
    ids = model.decode(torch.randn(300, 16), sample=True, generator=gen)
    assert bool(accepts(torch.cat([torch.zeros(300, 1, dtype=torch.long), ids], 1)).all())
    for row in ids.tolist():
        if grammar.PAD in row:
            dsl.parse(fill_empty_blocks(ids_to_program(row)))


def test_ids_to_program() -> None:
    ids = [*dsl.to_ids("run m( move m)"), 50, 50]
    assert ids_to_program(ids) == "DEF run m( move m)"
