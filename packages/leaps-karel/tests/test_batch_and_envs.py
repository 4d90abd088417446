from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import leaps_karel.envs as envs
from leaps_karel.batch import evaluate_batch, execute_batch
from leaps_karel.interpreter import execute
from leaps_karel.tasks import make
from leaps_karel.tasks.base import step_rewards
from leaps_karel.tasks.registry import get_spec

PROGRAMS = [
    "DEF run m( WHILE c( frontIsClear c) w( move w) m)",
    "DEF run m( pickMarker move pickMarker m)",
    "DEF run m( move",
    "DEF run m( REPEAT R=19 r( REPEAT R=19 r( turnLeft r) r) m)",
    "DEF run m( IFELSE c( markersPresent c) i( pickMarker i) ELSE e( putMarker e) m)",
]


@pytest.mark.parametrize("workers", [1, 2])
def test_execute_batch_matches_single_runs(workers):
    worlds = make("harvester").initial_worlds[:1] + make("maze", seed=2).initial_worlds[:3]
    result = execute_batch(PROGRAMS * 2, worlds, record=True, keep_worlds=True, workers=workers)
    assert result.num_actions.shape == (10, 4)
    for i, text in enumerate(PROGRAMS * 2):
        for j, world in enumerate(worlds):
            if i % 5 == 2:
                assert result.status[i, j] == -1
                assert result.num_actions[i, j] == -1
                continue
            r = execute(text, world)
            assert result.actions is not None
            assert result.worlds is not None
            assert result.actions[i][j] == r.actions
            assert result.num_actions[i, j] == len(r.actions)
            assert result.counter[i, j] == r.n
            assert result.finished[i, j] == r.finished
            assert result.worlds[i][j] == r.world


def test_evaluate_batch_matches_task_evaluate():
    task = make("harvester")
    expected = [task.evaluate(p) for p in PROGRAMS]
    assert np.allclose(evaluate_batch(task, PROGRAMS), expected)
    assert np.allclose(evaluate_batch(task, PROGRAMS * 2, workers=2), expected * 2)


@pytest.mark.parametrize("name", list(envs.ENV_NAMES))
def test_gymnasium_env_passes_the_checker(name):
    env = gymnasium.make(envs.env_id(name))
    check_env(env.unwrapped)
    obs, info = env.reset(seed=0)
    spec = get_spec(name)
    assert obs.shape == (spec.height, spec.width, 16)
    assert obs.dtype == np.int8
    assert info["perception"].shape == (5,)
    env.close()


def test_env_rewards_follow_the_task():
    env = envs.KarelEnv("harvester", reward_mode="state", render_mode="ansi")
    env.reset(seed=0)
    actions = [3, 0, 3, 0, 3]
    rewards = [env.step(a)[1] for a in actions]
    init = make("harvester").initial_worlds[0]
    assert rewards == pytest.approx(
        step_rewards(make("harvester").spec, init, actions, make("harvester").options)
    )
    assert "v" in (env.render() or "") or ">" in (env.render() or "")
    delta = envs.KarelEnv("harvester")
    delta.reset(seed=0)
    total = sum(delta.step(a)[1] for a in actions)
    assert total == pytest.approx(rewards[-1])


def test_env_terminates_when_solved_and_is_seeded():
    env = envs.KarelEnv("maze")
    first, _ = env.reset(seed=7)
    again, _ = env.reset(seed=7)
    assert np.array_equal(first, again)
    world = make("maze", seed=0).initial_worlds[0]
    env.reset(options={"world": world})
    solution = (
        "DEF run m( WHILE c( noMarkersPresent c) w( IFELSE c( rightIsClear c) i( "
        "turnRight i) ELSE e( WHILE c( not c( frontIsClear c) c) w( turnLeft w) e) "
        "move w) m)"
    )
    actions = execute(solution, world).actions
    reward = 0.0
    for i, a in enumerate(actions):
        _, reward, terminated, truncated, _ = env.step(a)
        assert terminated == (i == len(actions) - 1)
        assert not truncated
    assert reward == 1.0
    with pytest.raises(ValueError, match="action"):
        env.step(7)


def test_env_truncates():
    env = envs.KarelEnv("harvester", max_steps=3)
    env.reset(seed=0)
    assert [env.step(1)[3] for _ in range(3)] == [False, False, True]


@pytest.mark.parametrize("name", ["maze", "topoff"])
def test_rgb_array_render_passes_the_checker_and_draws_the_world(name):
    env = gymnasium.make(envs.env_id(name), render_mode="rgb_array").unwrapped
    assert "rgb_array" in env.metadata["render_modes"]
    check_env(env)  # with a spec, gymnasium also checks every other render mode
    env.reset(seed=1)
    frame = env.render()
    spec = get_spec(name)
    assert isinstance(frame, np.ndarray)
    assert frame.dtype == np.uint8
    cell = envs.RENDER_CELL  # plus the closing grid line
    assert frame.shape == (spec.height * cell + 1, spec.width * cell + 1, 3)
    before = frame.copy()
    env.step(1)  # turnLeft redraws the agent
    after = env.render()
    assert isinstance(after, np.ndarray)
    assert not np.array_equal(after, before)
    with pytest.raises(ValueError, match="render_mode"):
        envs.KarelEnv(name, render_mode="human")


def test_gymnasium_make_with_module_prefix_in_a_fresh_process():
    """Gymnasium 1.x has no plugin entry points: ``module:id`` registers in a fresh process."""
    import subprocess
    import sys

    code = (
        "import sys, gymnasium\n"
        "env = gymnasium.make('leaps_karel.envs:compkit/Karel-Maze-v0', render_mode='rgb_array')\n"
        "env.reset(seed=0)\n"
        "print(env.render().shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(257, 257, 3)"


def test_gymnasium_make_without_importing_the_package_in_a_fresh_process():
    """The installed start-up hook registers the ids as soon as gymnasium is imported."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, gymnasium\n"
        "assert 'leaps_karel' not in sys.modules or 'leaps_karel.envs' in sys.modules\n"
        "env = gymnasium.make('compkit/Karel-Maze-v0', render_mode='rgb_array')\n"
        "env.reset(seed=0)\n"
        "print(env.render().shape, sorted(i for i in gymnasium.registry if 'Karel' in i)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(257, 257, 3) compkit/Karel-CleanHouse-v0"
    # Interpreter start imports only compkit-utils' shared hook, not the package nor gymnasium.
    code = (
        "import sys; m = sys.modules; from compkit_utils import gym_hook as h\n"
        "[hook] = [f for f in sys.meta_path if isinstance(f, h._AfterGymnasium)]\n"
        "print('leaps_karel' in m, 'gymnasium' in m, 'leaps_karel.envs' in hook.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True"]
    # COMPKIT_NO_GYM_HOOK=1 turns it off: the id is unknown until leaps_karel.envs is imported.
    code = (
        "import gymnasium\n"
        "print('compkit/Karel-Maze-v0' in gymnasium.registry)\n"
        "import leaps_karel.envs\n"
        "print('compkit/Karel-Maze-v0' in gymnasium.registry)\n"
    )
    env = {**os.environ, "COMPKIT_NO_GYM_HOOK": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == ["False", "True"]


def test_env_ids_come_from_the_task_registry():
    from leaps_karel.tasks.registry import TASKS

    assert list(envs.ENV_NAMES) == list(TASKS)
    for name in TASKS:
        assert envs.env_id(name) in gymnasium.registry
