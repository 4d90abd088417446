from __future__ import annotations

import subprocess
import sys

import gymnasium
import minigrid  # noqa: F401  (registers the stock BabyAI levels)
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from minigrid.core.world_object import Box, Key
from minigrid.utils.baby_ai_bot import BabyAIBot

from factored_attention_babyai.env import (
    ENV_ID,
    MAX_STEPS,
    FullyObservedBot,
    GoToLocalEnv,
    agent_position,
    make_env,
)
from factored_attention_babyai.vocab import (
    GOALS,
    HELD_OUT,
    ID_GOALS,
    OOD_GOALS,
    WORDS,
    detokenize,
    is_ood,
    parse_goal,
    tokenize,
)

SEEDS = range(1, 41)


def stock_env() -> gymnasium.Env:
    return gymnasium.make("BabyAI-GoToLocal-v0").unwrapped


def bot_actions(env: GoToLocalEnv, seed: int) -> list[int]:
    env.reset(seed=seed)
    bot = FullyObservedBot(env)
    actions = []
    while True:
        action = int(bot.replan())  # pyright: ignore[reportArgumentType]
        actions.append(action)
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            return actions


def test_vocabulary_and_goals() -> None:
    assert list(WORDS) == sorted(WORDS)
    assert len(WORDS) == 15
    assert WORDS.index("[act]") == 0
    assert WORDS.index("yellow") == 14
    assert len(GOALS) == 36
    assert len(set(GOALS)) == 36
    assert len(ID_GOALS) == 24
    assert len(OOD_GOALS) == 12
    assert {parse_goal(g)[1:] for g in OOD_GOALS} == set(HELD_OUT)
    assert {parse_goal(g)[0] for g in OOD_GOALS} == {"a", "the"}
    assert tokenize("go to the red key").tolist() == [6, 13, 12, 11, 9]
    assert detokenize(tokenize("go to a grey box")) == "go to a grey box"
    assert is_ood("go to a red ball")
    assert not is_ood("go to the red key")
    with pytest.raises(ValueError, match="not a GoToLocal goal"):
        parse_goal("go to the red door")


@pytest.mark.parametrize("seed", [1, 7, 123])
def test_orientation_agent_cell_is_row_y_col_x(seed: int) -> None:
    env = make_env()
    obs, _ = env.reset(seed=seed)
    x, y = env.agent_pos
    image = obs["image"]
    assert image.shape == (8, 8, 3)
    assert image.dtype == np.uint8
    assert tuple(image[y, x]) == (10, 0, 1)  # agent, red, carrying nothing
    assert agent_position(image) == (y, x)
    for col in range(8):
        for row in range(8):
            cell = env.grid.get(col, row)
            if (col, row) == tuple(env.agent_pos):
                continue
            expected = (1, 0, 0) if cell is None else cell.encode()
            assert tuple(image[row, col]) == tuple(expected)
    assert obs["direction"] == env.agent_dir
    # Walk one step forward if possible: the agent cell moves along the direction vector.
    env.step(2)
    x2, y2 = env.agent_pos
    assert agent_position(env.gen_obs()["image"]) == (y2, x2)


def test_carried_object_in_agent_state_channel() -> None:
    env = make_env()
    env.reset(seed=5)
    env.carrying = Key("blue")  # pyright: ignore[reportAttributeAccessIssue]
    x, y = env.agent_pos
    assert tuple(env.gen_obs()["image"][y, x]) == (10, 0, 5)


@pytest.mark.parametrize("seed", list(SEEDS)[:15])
def test_same_layout_as_stock_minigrid(seed: int) -> None:
    ours, stock = make_env(), stock_env()
    obs, _ = ours.reset(seed=seed)
    stock.reset(seed=seed)
    assert obs["mission"] == stock.mission  # pyright: ignore[reportAttributeAccessIssue]
    assert tuple(ours.agent_pos) == tuple(stock.agent_pos)  # pyright: ignore[reportAttributeAccessIssue]
    assert ours.agent_dir == stock.agent_dir  # pyright: ignore[reportAttributeAccessIssue]
    assert np.array_equal(ours.grid.encode(), stock.grid.encode())  # pyright: ignore[reportAttributeAccessIssue]
    assert ours.max_steps == MAX_STEPS == stock.max_steps  # pyright: ignore[reportAttributeAccessIssue]
    assert obs["mission_tokens"].tolist() == tokenize(stock.mission).tolist()  # pyright: ignore[reportAttributeAccessIssue]


def test_same_layouts_and_random_stream_as_stock_over_many_seeds() -> None:
    ours, stock = make_env(), stock_env()
    for seed in range(300):
        ours.reset_layout(seed=seed)
        stock.reset(seed=seed)
        assert ours.mission == stock.mission  # pyright: ignore[reportAttributeAccessIssue]
        assert tuple(ours.agent_pos) == tuple(stock.agent_pos)  # pyright: ignore[reportAttributeAccessIssue]
        assert np.array_equal(ours.grid.encode(), stock.grid.encode())  # pyright: ignore[reportAttributeAccessIssue]
        # Same number of draws consumed: the generators are in the same state.
        assert ours.np_random.integers(1 << 30) == stock.np_random.integers(1 << 30)


def test_success_requires_done_while_stock_does_not() -> None:
    ours, stock = make_env(), stock_env()
    checked = 0
    for seed in SEEDS:
        actions = bot_actions(ours, seed)
        assert actions[-1] == 6  # the bot ends with `done`
        ours.reset(seed=seed)
        stock.reset(seed=seed)
        for t, action in enumerate(actions):
            _, r_ours, term_ours, _, _ = ours.step(action)
            _, r_stock, term_stock, _, _ = stock.step(action)
            if t < len(actions) - 2:
                assert not term_ours
                assert not term_stock
                assert r_ours == r_stock == 0
            elif t == len(actions) - 2:
                # Facing the target: stock minigrid succeeds already, ours waits for `done`.
                assert term_stock
                assert float(r_stock) > 0
                assert not term_ours
                assert r_ours == 0
                assert ours.facing_target()
            else:
                assert term_ours
                assert r_ours == pytest.approx(1 - 0.9 * len(actions) / MAX_STEPS)
        checked += 1
    assert checked == len(SEEDS)


def test_done_elsewhere_does_nothing() -> None:
    env = make_env()
    for seed in SEEDS:
        env.reset(seed=seed)
        if not env.facing_target():
            break
    _obs, reward, terminated, truncated, _ = env.step(6)
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert env.step_count == 1


def _seed_with_empty_front(env: gymnasium.Env) -> int:
    for seed in SEEDS:
        env.reset(seed=seed)
        base = env.unwrapped
        if base.grid.get(*base.front_pos) is None:  # pyright: ignore[reportAttributeAccessIssue]
            return seed
    raise AssertionError("no seed with an empty front cell")


def test_toggle_on_empty_box_is_a_no_op_unlike_stock() -> None:
    ours, stock = make_env(), stock_env()
    seed = _seed_with_empty_front(ours)
    for env in (ours, stock):
        env.reset(seed=seed)
        fx, fy = env.front_pos  # pyright: ignore[reportAttributeAccessIssue]
        env.grid.set(fx, fy, Box("green"))  # pyright: ignore[reportAttributeAccessIssue]
    ours.grid_changed()
    obs, reward, terminated, _, _ = ours.step(5)
    stock.step(5)
    assert stock.grid.get(*stock.front_pos) is None  # pyright: ignore[reportAttributeAccessIssue]  # stock deletes the box
    front = ours.grid.get(*ours.front_pos)
    assert isinstance(front, Box)
    assert front.color == "green"
    fx, fy = ours.front_pos
    assert tuple(obs["image"][fy, fx]) == (7, 1, 0)
    assert (reward, terminated, ours.step_count) == (0.0, False, 1)


def test_toggle_on_full_box_opens_it() -> None:
    env = make_env()
    seed = _seed_with_empty_front(env)
    env.reset(seed=seed)
    box = Box("green")
    box.contains = Key("red")
    fx, fy = env.front_pos
    env.grid.set(fx, fy, box)
    env.grid_changed()
    obs, *_ = env.step(5)
    fx, fy = env.front_pos
    assert tuple(obs["image"][fy, fx]) == (5, 0, 0)  # the red key the box held


def test_target_mask_marks_every_matching_object() -> None:
    env = make_env()
    for seed in SEEDS:
        obs, _ = env.reset(seed=seed)
        det, color, kind = parse_goal(obs["mission"])
        mask = obs["target_mask"]
        assert mask.shape == (8, 8)
        assert mask.dtype == np.bool_
        expected = np.zeros((8, 8), dtype=bool)
        for col in range(8):
            for row in range(8):
                cell = env.grid.get(col, row)
                expected[row, col] = cell is not None and (cell.type, cell.color) == (kind, color)
        assert np.array_equal(mask, expected)
        assert (mask.sum() == 1) == (det == "the")


def test_fully_observed_bot_matches_stock_bot_with_full_visibility() -> None:
    env = make_env()
    for seed in range(1, 81):
        ours = bot_actions(env, seed)
        env.reset(seed=seed)
        bot = BabyAIBot(env)
        bot.vis_mask[:] = True
        stock = []
        while True:
            action = int(bot.replan())  # pyright: ignore[reportArgumentType]
            stock.append(action)
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        assert ours == stock


def test_reachability_check_matches_minigrid() -> None:
    from minigrid.envs.babyai.core.roomgrid_level import RejectSampling, RoomGridLevel

    env = make_env()
    rng = np.random.default_rng(0)
    outcomes = set()
    for seed in range(60):
        env.reset(seed=seed)
        for _ in range(int(rng.integers(0, 12))):  # clutter the room: some objects get walled in
            x, y = (int(v) for v in rng.integers(1, 7, size=2))
            if (x, y) != tuple(env.agent_pos):
                env.grid.set(x, y, Key("red"))
        ours = env.check_objs_reachable(raise_exc=False)
        assert ours == RoomGridLevel.check_objs_reachable(env, raise_exc=False)
        outcomes.add(ours)
        if not ours:
            messages = []
            for check in (
                env.check_objs_reachable,
                lambda: RoomGridLevel.check_objs_reachable(env),
            ):
                with pytest.raises(RejectSampling) as info:
                    check()
                messages.append(str(info.value))
            assert messages[0] == messages[1]
    assert outcomes == {True, False}


def test_gymnasium_make_check_env_and_render() -> None:
    env = gymnasium.make(ENV_ID, render_mode="rgb_array")
    check_env(env.unwrapped)
    env.reset(seed=3)
    frame = env.render()
    assert isinstance(frame, np.ndarray)
    assert frame.ndim == 3
    assert frame.shape[2] == 3
    obs, _ = env.reset(seed=3)
    again, _ = env.reset(seed=3)
    assert np.array_equal(obs["image"], again["image"])
    assert obs["mission"] == again["mission"]


def test_registered_without_importing_the_package() -> None:
    code = (
        "import sys, gymnasium\n"
        f"env = gymnasium.make({ENV_ID!r})\n"
        "obs, _ = env.reset(seed=1)\n"
        "assert obs['image'].shape == (8, 8, 3)\n"
        "print(type(env.unwrapped).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "GoToLocalEnv"


def test_start_up_file_registers_with_the_shared_hook() -> None:
    """Interpreter start adds the env module to compkit-utils' one hook, importing nothing else.

    (The hook itself, chaining other finders included, is tested in compkit-utils.)
    """
    code = (
        "import sys\n"
        "from compkit_utils import gym_hook\n"
        "hooks = [f for f in sys.meta_path if isinstance(f, gym_hook._AfterGymnasium)]\n"
        "assert len(hooks) == 1, hooks\n"
        "assert 'factored_attention_babyai.env' in hooks[0].modules, hooks[0].modules\n"
        "assert 'gymnasium' not in sys.modules and 'factored_attention_babyai' not in sys.modules\n"
        "import gymnasium\n"
        f"print({ENV_ID!r} in gymnasium.registry, not gym_hook.import_errors)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["True", "True"]


def test_rejection_messages_are_silenced(capsys: pytest.CaptureFixture[str]) -> None:
    env = make_env()
    for seed in range(200):
        env.reset_layout(seed=seed)
    assert "Sampling rejected" not in capsys.readouterr().out


def test_state_key_ignores_the_step_count_and_nothing_else() -> None:
    env = make_env()
    seed = _seed_with_empty_front(env)
    env.reset(seed=seed)
    start = env.state_key()
    for _ in range(4):  # a full turn on the spot: the same state, four steps later
        env.step(0)
    assert env.step_count == 4
    assert env.state_key() == start
    env.step(1)
    assert env.state_key() != start  # direction
    env.step(0)
    env.step(2)  # forward into the empty front cell
    assert env.state_key() != start  # position


def test_state_key_sees_the_carried_object_and_box_contents() -> None:
    env = make_env()
    seed = _seed_with_empty_front(env)
    env.reset(seed=seed)
    fx, fy = env.front_pos
    env.grid.set(fx, fy, Key("red"))
    env.grid_changed()
    before = env.state_key()
    env.step(3)  # pick the key up: the grid and the carried object change
    carrying = env.state_key()
    assert carrying != before
    env.step(4)  # put it back: the same state as before
    assert env.state_key() == before
    empty, full = Box("green"), Box("green")
    full.contains = Key("red")
    keys = []
    for box in (empty, full):
        env.grid.set(fx, fy, box)
        env.grid_changed()
        keys.append(env.state_key())
    assert keys[0] != keys[1]  # same grid codes, different futures under toggle
