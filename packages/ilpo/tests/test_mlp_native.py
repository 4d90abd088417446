"""The BC/BCO classifiers' native training loop (``mlp_train.c``) against the PyTorch steps."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from compkit_utils import testing
from ilpo import mlp_native
from ilpo.baselines import MLP, bc_policy, bco_idm, bco_policy, train_bc, train_steps
from ilpo.lpn import FlatAdam

needs_native = testing.needs_native(mlp_native.native_library)


@pytest.fixture
def backend():
    yield mlp_native.set_backend
    mlp_native.set_backend("auto")


def _setup(
    make: Callable[[int, int], MLP], d: int, a: int, n: int, beta1: float = 0.5
) -> tuple[MLP, FlatAdam, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(7)
    net = make(d, a)
    opt = FlatAdam(list(net.parameters()), lr=2e-3, betas=(beta1, 0.999))
    x = torch.randn(n, net.sizes[0], generator=gen)
    y = torch.randint(0, a, (n,), generator=gen)
    return net, opt, x, y


@needs_native
def test_native_argument_struct_matches_the_c_side() -> None:
    lib = mlp_native.native_library()
    assert lib is not None  # check_layout ran inside native_library()
    sizes = torch.tensor([4, 128, 256, 2])
    assert lib.mlp_param_count(3, sizes.data_ptr()) == sum(
        p.numel() for p in bc_policy(4, 2).parameters()
    )


@needs_native
@pytest.mark.parametrize(
    ("make", "d", "a", "n", "batch"),
    [
        (bc_policy, 4, 2, 300, 32),  # CartPole BC; last minibatch of 12
        (bco_policy, 6, 3, 200, 32),  # Acrobot's BCO policy, five layers
        (bco_idm, 6, 3, 100, 32),  # the IDM on [s ; s'] (12 inputs: gemm's weight gradient)
        (bc_policy, 2, 3, 64, 7),  # MountainCar sizes, odd batch
    ],
)
def test_native_steps_match_the_pytorch_steps(backend, make, d, a, n, batch) -> None:
    runs = []
    for name in ("native", "torch"):
        backend(name)
        net, opt, x, y = _setup(make, d, a, n)
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(1))
        idx = torch.cat([idx, idx.flip(0)])  # two passes
        losses = train_steps(net, opt, x, y, idx, batch)
        assert losses.shape == (math.ceil(2 * n / batch),)
        assert opt.steps == len(losses)
        runs.append((losses, opt.flat.clone(), opt.exp_avg.clone(), opt.exp_avg_sq.clone()))
    (l_n, p_n, m_n, v_n), (l_t, p_t, m_t, v_t) = runs
    torch.testing.assert_close(l_n, l_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p_n, p_t, rtol=1e-4, atol=1e-4)  # 1/20 of a step
    torch.testing.assert_close(m_n, m_t, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(v_n, v_t, rtol=1e-3, atol=1e-9)
    assert l_n[-4:].mean() < l_n[:4].mean()  # it learns (random labels: memorising)


@needs_native
def test_native_steps_continue_an_optimizer_that_has_stepped(backend) -> None:
    """Adam's bias correction counts the steps taken before the call (resume, BCO iterations)."""
    out = []
    for name in ("native", "torch"):
        backend(name)
        net, opt, x, y = _setup(bc_policy, 4, 2, 96)
        idx = torch.arange(96)
        train_steps(net, opt, x, y, idx, 32)
        backend("native")
        train_steps(net, opt, x, y, idx.flip(0), 32)
        out.append(opt.flat.clone())
    torch.testing.assert_close(out[0], out[1], rtol=1e-4, atol=1e-4)


@needs_native
def test_native_training_is_deterministic(backend) -> None:
    backend("native")
    finals = []
    for _ in range(2):
        net, opt, x, y = _setup(bco_policy, 4, 2, 256)
        losses = train_steps(net, opt, x, y, torch.randint(0, 256, (32 * 40,)), 32)
        finals.append((losses, opt.flat.clone()))
    assert torch.equal(finals[0][0], finals[1][0])
    assert torch.equal(finals[0][1], finals[1][1])


@needs_native
def test_bc_training_tracks_the_pytorch_steps(backend) -> None:
    gen = torch.Generator().manual_seed(0)
    states = torch.randn(200, 4, generator=gen)
    actions = (states[:, 2] + 0.3 * states[:, 3] > 0).long()  # a learnable rule
    logs: dict[str, list[float]] = {}
    for name in ("native", "torch"):
        backend(name)
        rows: list[float] = []
        train_bc(
            states,
            actions,
            2,
            epochs=5,
            seed=0,
            log=lambda _, m, r=rows: r.append(m["train/bc_loss"]),
        )
        logs[name] = rows
    assert logs["native"] == pytest.approx(logs["torch"], rel=1e-4)
    assert logs["native"][-1] < logs["native"][0]


@needs_native
def test_out_of_range_indices_and_labels_are_refused(backend) -> None:
    backend("native")
    net, opt, x, y = _setup(bc_policy, 4, 2, 50)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 50\)"):
        mlp_native.native_train(net, opt, x, y, torch.tensor([0, 50]), 32)
    y[3] = 2
    with pytest.raises(ValueError, match="labels in"):
        mlp_native.native_train(net, opt, x, y, torch.tensor([3]), 32)
    assert opt.steps == 0


def test_native_path_is_skipped_where_it_does_not_apply(backend) -> None:
    net, opt, x, y = _setup(bc_policy, 4, 2, 40)
    idx = torch.arange(40)
    backend("torch")
    assert mlp_native.native_train(net, opt, x, y, idx, 32) is None
    backend("auto")
    # float64 inputs, int32 labels, wrong width, an optimizer over other parameters
    assert mlp_native.native_train(net, opt, x.double(), y, idx, 32) is None
    assert mlp_native.native_train(net, opt, x, y.int(), idx, 32) is None
    assert mlp_native.native_train(net, opt, x[:, :3], y, idx, 32) is None
    other = bc_policy(4, 2)
    assert mlp_native.native_train(other, opt, x, y, idx, 32) is None
    net64 = bc_policy(4, 2).double()
    opt64 = FlatAdam(list(net64.parameters()), lr=1e-3, betas=(0.9, 0.999))
    assert mlp_native.native_train(net64, opt64, x, y, idx, 32) is None
    # the PyTorch steps still train those
    losses = train_steps(net64, opt64, x.double(), y, idx, 32)
    assert losses.shape == (2,)
    assert opt64.steps == 2
