"""MVProp: value spreads only through traversable cells; the Q-network's shapes."""

from __future__ import annotations

from collections import deque

import torch

from factored_attention_babyai.models.mvprop import MVProp, minmax, neighbour_max
from factored_attention_babyai.models.qnet import QNetwork

# 0 free, 1 wall; the goal sits at G. The wall column 4 has one gap (row 6), so the cells right of
# it are reached only through the gap; the walled-in pocket top-right is unreachable.
MAZE = [
    "....#...",
    "....#.##",
    "..G.#.#.",
    "....#.##",
    "....#...",
    "....#...",
    "........",
    "....#...",
]


def _setup(k: int) -> tuple[MVProp, torch.Tensor, torch.Tensor, list[list[int | None]]]:
    model = MVProp(feature_dim=2, k=k)
    with torch.no_grad():  # p = σ(20·free − 10): σ(10) on free cells, σ(−10) on walls
        model.gather.weight.copy_(torch.tensor([[20.0, 0.0]]))
        model.gather.bias.fill_(-10.0)
    free = torch.tensor([[float(c != "#") for c in row] for row in MAZE])
    features = torch.stack([free, torch.zeros_like(free)], -1)[None]  # [1, 8, 8, 2]
    goal = torch.tensor([[float(c == "G") for c in row] for row in MAZE])[None]
    # Breadth-first distances from the goal through free cells (4-connected).
    dist: list[list[int | None]] = [[None] * 8 for _ in range(8)]
    dist[2][2] = 0
    queue = deque([(2, 2)])
    while queue:
        r, c = queue.popleft()
        for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            rr, cc = r + dr, c + dc
            if 0 <= rr < 8 and 0 <= cc < 8 and MAZE[rr][cc] != "#" and dist[rr][cc] is None:
                dist[rr][cc] = dist[r][c] + 1  # type: ignore[operator]
                queue.append((rr, cc))
    return model, features, goal, dist


def test_value_flows_only_through_traversable_cells() -> None:
    k = 14
    model, features, goal, dist = _setup(k)
    prop, value, reward = model(features, goal)
    gamma = torch.sigmoid(torch.tensor(1.0)).item()
    step = gamma * torch.sigmoid(torch.tensor(10.0)).item() ** 2  # γ · κ_edge · p_free
    torch.testing.assert_close(reward, goal / (1 + 1e-4))  # MinMax of a 0/1 map
    for r in range(8):
        for c in range(8):
            d = dist[r][c]
            v = value[0, r, c].item()
            if MAZE[r][c] == "#":
                assert v < 1e-3, (r, c, v)  # walls take (almost) no value
            elif d is None:
                assert v < 1e-3, (r, c, v)  # the sealed pocket gets none
            elif d == 0:
                assert v == 0.0  # the goal's own reward is removed
            elif d <= k:
                assert abs(v - step**d) < 1e-3, (r, c, v, step**d)
            else:
                assert v < 1e-3
    # Right of the wall the value follows the detour through the gap, not the straight line.
    assert dist[2][5] == 11
    assert abs(value[0, 2, 5].item() - step**11) < 1e-3
    assert value[0, 2, 5].item() < 0.2 * step**3  # straight through the wall it would be γ³
    assert bool((prop[0][features[0, ..., 0] == 0] < 1e-4).all())


def test_value_is_limited_to_k_steps_and_k0_gives_zero() -> None:
    model, features, goal, dist = _setup(3)
    _, value, _ = model(features, goal)
    far = [(r, c) for r in range(8) for c in range(8) if (dist[r][c] or 0) > 3]
    assert far
    assert all(value[0, r, c].item() < 1e-3 for r, c in far)
    model0, *_ = _setup(0)
    _, value0, reward0 = model0(features, goal)
    assert bool((value0 == 0).all())
    torch.testing.assert_close(reward0, goal / (1 + 1e-4))


def test_neighbour_max_matches_loops() -> None:
    torch.manual_seed(0)
    v = torch.rand(2, 5, 6)
    weights = torch.rand(3, 3)
    out = neighbour_max(v, weights)
    for b in range(2):
        for r in range(5):
            for c in range(6):
                best = 0.0
                for i in range(3):
                    for j in range(3):
                        rr, cc = r + i - 1, c + j - 1
                        if 0 <= rr < 5 and 0 <= cc < 6:
                            best = max(best, weights[i, j].item() * v[b, rr, cc].item())
                assert abs(out[b, r, c].item() - best) < 1e-6


def test_minmax_has_no_gradient_through_extremes() -> None:
    x = torch.tensor([[[0.5, 1.0], [0.0, 0.25]]], requires_grad=True)
    out = minmax(x)
    torch.testing.assert_close(out, torch.tensor([[[0.5, 1.0], [0.0, 0.25]]]) / (1 + 1e-4))
    out.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / (1 + 1e-4)))


def test_gradients_reach_propagation_discount_and_qnet() -> None:
    torch.manual_seed(0)
    mvprop = MVProp(feature_dim=96, k=4)
    qnet = QNetwork()
    features = torch.randn(3, 8, 8, 96)
    goal = torch.rand(3, 8, 8)
    _prop, value, reward = mvprop(features, goal)
    q = qnet(torch.tensor([0, 1, 3]), features, value, reward)
    assert q.shape == (3, 7)
    q.sum().backward()
    assert mvprop.gather.weight.grad is not None
    assert mvprop.gather.weight.grad.abs().sum() > 0
    assert mvprop.discount_logit.grad is not None
    assert mvprop.discount_logit.grad.abs() > 0


def test_factored_first_convolution_equals_the_plain_network() -> None:
    from factored_attention_babyai.models.interaction import factor_embeddings

    torch.manual_seed(0)
    qnet = QNetwork()
    table = torch.randn(17, 48)
    image = torch.randint(0, 6, (5, 8, 8, 3))
    image[..., 0] = torch.randint(0, 11, (5, 8, 8))
    features = factor_embeddings(table, image).permute(0, 2, 3, 1, 4).flatten(-2)
    direction = torch.tensor([0, 1, 2, 3, 1])
    value = torch.rand(5, 8, 8, requires_grad=True)
    reward = torch.rand(5, 8, 8)
    plain = qnet(direction, features, value, reward)
    grads_plain = torch.autograd.grad(plain.square().sum(), [value, *qnet.parameters()])
    fast = qnet.forward_factored(direction, image, table, value, reward)
    grads_fast = torch.autograd.grad(fast.square().sum(), [value, *qnet.parameters()])
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads_fast, grads_plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
