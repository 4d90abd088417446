from __future__ import annotations

import dataclasses
import gzip
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from compkit_utils.config import load, save
from compkit_utils.datasets.info import read_info, verify_info
from compkit_utils.errors import UserError
from compkit_utils.io import atomic_write_json
from leaps_karel import dataset as ds
from leaps_karel import dataset_shards, demos, dsl
from leaps_karel.cli import main
from leaps_karel.config import DatasetConfig, GenerateDatasetConfig
from leaps_karel.dataset import generate_dataset, sample_worlds
from leaps_karel.interpreter import compile_program, execute
from leaps_karel.reader import KarelProgramDataset
from leaps_karel.sampler import ProgramSampler
from leaps_karel.world import World

DATA = Path(__file__).parent / "data" / "dataset_sample"
SMALL = DatasetConfig(num_programs=12, seed=5)
ID_PATTERN = re.compile(r"^no_(\d+)_prog_len_(\d+)_max_s_h_len_(\d+)$")


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dataset_sample")
    with gzip.open(DATA / "data.hdf5.gz", "rb") as src, open(folder / "data.hdf5", "wb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.copy(DATA / "id.txt", folder / "id.txt")
    return folder


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    generate_dataset(out, SMALL, shard_size=5)
    return out


def file_bytes(folder: Path) -> tuple[bytes, bytes]:
    return (folder / "data.hdf5").read_bytes(), (folder / "id.txt").read_bytes()


def replay_check(item: dict[str, np.ndarray]) -> None:
    """Every demonstration replays through the crash-mode interpreter to the stored arrays."""
    text = dsl.ids_to_text(item["program"].tolist())
    run = compile_program(text, mode="crash")
    for d in range(item["s_h_len"].shape[0]):
        length = int(item["s_h_len"][d])
        assert int(item["a_h_len"][d]) == length - 1
        states = item["s_h"][d]
        actions = item["a_h"][d, : length - 1].tolist()
        assert not states[length:].any()
        assert not item["a_h"][d, length - 1 :].any()
        world = World.from_tensor(states[0])
        got, _, status, _ = run(world.copy())
        assert status == 0, (text, d)
        assert got == actions, (text, d)
        replayed = demos._states_tensor(world, actions)
        np.testing.assert_array_equal(replayed, states[:length])


# --- the original's sample -------------------------------------------------------------------


def test_reads_the_original_sample(fixture_dir: Path) -> None:
    data = KarelProgramDataset(fixture_dir, validate=True)
    assert len(data) == 20
    assert data.ids[0] == "no_0_prog_len_19_max_s_h_len_5"
    first = data[0]
    assert set(first) == {"program", "s_h", "a_h", "s_h_len", "a_h_len"}
    assert first["program"].tolist() == [
        0,
        1,
        2,
        6,
        4,
        6,
        4,
        49,
        32,
        41,
        33,
        47,
        31,
        27,
        9,
        4,
        10,
        48,
        3,
    ]
    assert data.program_text(0) == (
        "DEF run m( turnLeft move turnLeft move WHILE c( frontIsClear c) "
        "w( REPEAT R=16 r( move r) w) m)"
    )
    assert first["s_h"].shape == (10, 5, 8, 8, 16)
    assert first["s_h"].dtype == np.bool_
    assert first["a_h"].shape == (10, 4)
    assert first["a_h"].dtype == np.int8
    assert first["s_h_len"].dtype == np.int16
    assert first["s_h_len"].tolist() == [5] * 10
    assert first["a_h"][0].tolist() == [1, 0, 1, 0]
    assert data.info["dsl_type"] == "prob"
    assert data.info["num_train"] == 20
    assert data.info["num_demo_per_program"] == 10
    assert data.info["max_demo_length"] == 11
    assert data.info["min_program_length"] == 8
    for i, name in enumerate(data.ids):
        match = ID_PATTERN.match(name)
        assert match
        assert int(match.group(1)) == i
        item = data[i]
        assert int(match.group(2)) == item["program"].shape[0]
        assert int(match.group(3)) == int(item["s_h_len"].max())


def test_original_demos_replay_with_our_interpreter(fixture_dir: Path) -> None:
    data = KarelProgramDataset(fixture_dir)
    for i in range(len(data)):
        replay_check(data[i])


def test_reader_without_id_file_uses_generation_order(fixture_dir: Path, tmp_path: Path) -> None:
    shutil.copy(fixture_dir / "data.hdf5", tmp_path / "data.hdf5")
    data = KarelProgramDataset(tmp_path / "data.hdf5")
    assert data.ids == KarelProgramDataset(fixture_dir).ids


# --- our generator ---------------------------------------------------------------------------


def test_generated_layout_matches_the_original(generated: Path, fixture_dir: Path) -> None:
    with (
        h5py.File(fixture_dir / "data.hdf5") as ref_file,
        h5py.File(generated / "data.hdf5") as new_file,
    ):
        ref: Any = ref_file
        new: Any = new_file
        ref_group = ref["no_0_prog_len_19_max_s_h_len_5"]
        new_group = new[next(k for k in new if k != "data_info")]
        assert set(ref_group) == set(new_group)
        for key in ref_group:
            assert new_group[key].dtype == ref_group[key].dtype, key
            assert new_group[key].ndim == ref_group[key].ndim, key
        assert set(ref["data_info"]) == set(new["data_info"])
        for key in ref["data_info"]:
            assert new["data_info"][key].dtype.kind == ref["data_info"][key].dtype.kind, key
    ids = (generated / "id.txt").read_text().splitlines()
    assert len(ids) == SMALL.num_programs
    assert all(ID_PATTERN.match(name) for name in ids)


def test_generated_programs_and_demos_are_valid(generated: Path) -> None:
    data = KarelProgramDataset(generated, validate=True)
    assert len(data) == SMALL.num_programs
    texts = [data.program_text(i) for i in range(len(data))]
    assert len(set(texts)) == len(texts)
    for i in range(len(data)):
        item = data[i]
        assert item["program"].shape[0] <= SMALL.max_program_length
        dsl.parse(texts[i], strict=True)
        assert item["s_h_len"].shape == (SMALL.num_demo_per_program,)
        assert (item["s_h_len"] >= SMALL.min_demo_length).all()
        assert (item["s_h_len"] <= SMALL.max_demo_length).all()
        replay_check(item)
    assert data.info["num_train"] + data.info["num_val"] + data.info["num_test"] == 12
    info = verify_info(generated)
    assert info.seed == 5
    assert info.counts["programs"] == 12
    assert info.extra["params"] == dataclasses.asdict(SMALL)
    assert not (generated / ".shards").exists()


def test_first_programs_follow_the_candidate_stream(generated: Path) -> None:
    data = KarelProgramDataset(generated)
    sampler = ProgramSampler(SMALL.seed)
    drawn = [sampler.sample() for _ in range(400)]
    positions = [drawn.index(data.program_text(i)) for i in range(len(data))]
    assert positions == sorted(positions)


def test_fast_path_matches_the_plain_reference() -> None:
    stream = ds.candidate_stream(SMALL)
    kept = 0
    for index in range(30):
        tokens = next(stream)
        fast = ds.demos_for_program(tokens, ds.candidate_rng(SMALL.seed, index), SMALL)
        plain = ds.demos_for_program_reference(tokens, ds.candidate_rng(SMALL.seed, index), SMALL)
        assert (fast is None) == (plain is None), tokens
        if fast is not None and plain is not None:
            kept += 1
            assert fast.trials == plain.trials
            for key, value in fast.arrays().items():
                np.testing.assert_array_equal(value, plain.arrays()[key])
    assert kept >= 5


def test_output_identical_for_any_shard_size(generated: Path, tmp_path: Path) -> None:
    generate_dataset(tmp_path, SMALL, shard_size=7)
    assert file_bytes(tmp_path) == file_bytes(generated)


def test_output_identical_with_worker_processes(generated: Path, tmp_path: Path) -> None:
    report = generate_dataset(tmp_path, SMALL, n_procs=2, shard_size=4)
    assert report.shards_generated >= 2
    assert file_bytes(tmp_path) == file_bytes(generated)


def test_resumes_after_interruption(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = dataset_shards._run_shard
    calls = []

    def interrupted(job: dict) -> dict:
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(job["shard"])
        return real(job)

    monkeypatch.setattr(ds, "_run_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path, SMALL, shard_size=5)
    assert sorted(p.name for p in (tmp_path / ".shards").glob("shard_*.hdf5")) == [
        "shard_000000.hdf5",
        "shard_000001.hdf5",
    ]
    assert not (tmp_path / "data.hdf5").exists()
    monkeypatch.setattr(ds, "_run_shard", real)
    with pytest.raises(UserError, match="--resume"):
        generate_dataset(tmp_path, SMALL, shard_size=5)
    report = generate_dataset(tmp_path, SMALL, shard_size=5, resume=True)
    assert report.shards_reused == 2
    assert file_bytes(tmp_path) == file_bytes(generated)


def test_refuses_to_mix_settings_or_overwrite(generated: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="already holds a generated dataset"):
        generate_dataset(generated, SMALL, shard_size=5)
    (tmp_path / ".shards").mkdir()
    atomic_write_json(tmp_path / ".shards" / "manifest.json", {"format_version": 0})
    with pytest.raises(UserError, match="different settings"):
        generate_dataset(tmp_path, SMALL, resume=True)
    report = generate_dataset(tmp_path, dataclasses.replace(SMALL, num_programs=3), overwrite=True)
    assert len(KarelProgramDataset(report.out_dir)) == 3


def test_uncompressed_output_has_the_same_content(generated: Path, tmp_path: Path) -> None:
    generate_dataset(tmp_path, SMALL, shard_size=5, compression=None)
    plain, packed = KarelProgramDataset(tmp_path), KarelProgramDataset(generated)
    assert plain.ids == packed.ids
    for i in (0, len(plain) - 1):
        for key, value in plain[i].items():
            np.testing.assert_array_equal(value, packed[i][key])


def test_bad_settings_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--min-demo-length"):
        generate_dataset(tmp_path, DatasetConfig(min_demo_length=30))
    with pytest.raises(UserError, match="--n-procs"):
        generate_dataset(tmp_path, SMALL, n_procs=0)


# --- reader errors and workers ---------------------------------------------------------------


def test_reader_errors_name_the_file_and_dataset(fixture_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such dataset file"):
        KarelProgramDataset(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(fixture_dir / "data.hdf5", bad / "data.hdf5")
    (bad / "id.txt").write_text("no_0_prog_len_19_max_s_h_len_5\nno_99_missing\n")
    with pytest.raises(UserError, match="no_99_missing"):
        KarelProgramDataset(bad)
    with h5py.File(bad / "data.hdf5", "a") as handle:
        group: Any = handle["no_0_prog_len_19_max_s_h_len_5"]
        del group["a_h"]
        group["a_h"] = np.zeros((10, 4), dtype=np.float32)
    (bad / "id.txt").write_text("no_0_prog_len_19_max_s_h_len_5\n")
    data = KarelProgramDataset(bad)
    with pytest.raises(
        UserError, match=r"data\.hdf5: dataset 'no_0_prog_len_19_max_s_h_len_5/a_h'"
    ):
        data[0]
    with pytest.raises(UserError, match="a_h"):
        KarelProgramDataset(bad, validate=True)
    data.close()
    (bad / "data.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="corrupt or not an HDF5 file"):
        KarelProgramDataset(bad)


def test_reader_pickles_without_its_file_handle(fixture_dir: Path) -> None:
    data = KarelProgramDataset(fixture_dir)
    first = data[3]
    assert data._handle is not None
    clone = pickle.loads(pickle.dumps(data))
    assert clone._handle is None
    np.testing.assert_array_equal(clone[3]["s_h"], first["s_h"])
    with pytest.raises(IndexError):
        data[20]
    data.close()
    assert data[-1]["program"].dtype == np.int8


# --- worlds ----------------------------------------------------------------------------------


def test_world_sampler_distribution() -> None:
    walls, markers, agents = sample_worlds(np.random.default_rng(0), 3000)
    assert walls[:, 0].all()
    assert walls[:, -1].all()
    assert walls[:, :, 0].all()
    assert walls[:, :, -1].all()
    assert abs(walls[:, 1:-1, 1:-1].mean() - 0.1) < 0.01
    assert not (markers.astype(bool) & walls).any()
    assert markers.max() == 1
    assert abs(markers[~walls].mean() - 0.1) < 0.01
    rows, cols, dirs = agents.T
    assert not walls[np.arange(3000), rows, cols].any()
    assert np.bincount(dirs, minlength=4).min() > 650
    # Uniform over free cells: the interior cells are hit about equally often.
    hits = np.bincount(rows * 8 + cols, minlength=64).reshape(8, 8)[1:-1, 1:-1]
    assert hits.min() > 40
    assert hits.max() < 125


def test_world_batch_matches_world_construction() -> None:
    batch = demos._WorldBatch(*sample_worlds(np.random.default_rng(1), 30, wall_prob=0.25))
    programs = ProgramSampler(seed=2).sample_many(40)
    for i in range(30):
        fast = batch.world(i, neighbours=True)
        slow = World(8, 8, fast.walls, fast.markers, fast.agent)
        assert fast == slow
        assert fast.neighbours == slow.neighbours
        assert fast.tables == slow.tables
        np.testing.assert_array_equal(fast.to_tensor(), slow.to_tensor())
        for text in programs[i : i + 10]:
            for mode in ("crash", "no_crash"):
                a = execute(text, batch.world(i), mode=mode)
                b = execute(text, slow, mode=mode)
                assert (a.actions, a.status, a.world) == (b.actions, b.status, b.world)


# --- command line ----------------------------------------------------------------------------


def test_cli_smoke_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate-dataset", "--smoke", "--runs-dir", str(tmp_path)]) == 0
    (folder,) = (tmp_path / "leaps-karel").iterdir()
    assert load(folder / "config.json", GenerateDatasetConfig).smoke
    data = KarelProgramDataset(folder / "dataset")
    assert len(data) == 20
    assert read_info(folder / "dataset").counts["programs"] == 20
    assert "programs/s" in capsys.readouterr().out
    out = tmp_path / "x"
    assert main(["generate-dataset", "--out-dir", str(out), "--num-programs", "0"]) == 2
    assert "--num-programs must be at least 1, got 0" in capsys.readouterr().err


def test_config_round_trips_through_json(tmp_path: Path) -> None:
    cfg = GenerateDatasetConfig(
        out_dir=tmp_path / "d",
        data=DatasetConfig(num_programs=5, wall_prob=0.2),
        n_procs=2,
        compression="lzf",
    )
    save(cfg, tmp_path / "config.json")
    assert load(tmp_path / "config.json", GenerateDatasetConfig) == cfg
