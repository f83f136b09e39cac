"""Soft-GRPO losses and GRPO advantages against closed forms on small categorical distributions.

A batch that repeats each token in proportion to a rational distribution q makes the token-mean of a per-token
loss equal its expectation under q exactly, so estimators can be checked against KLs computed directly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from r4t.errors import ConfigError
from r4t.rl.advantages import ADVANTAGES, get_advantage, group_advantages
from r4t.rl.losses import POLICY_LOSSES, aggregate, get_loss, grpo_kl_loss, k3, soft_grpo_loss

P_OLD = [0.5, 0.25, 0.25]
ENUM_OLD = torch.tensor([0, 0, 1, 2])  # each token repeated in proportion to P_OLD: a token-mean is E_{p_old}
LOGITS = [0.3, -1.2, 0.8]


@pytest.fixture(autouse=True)
def float64():
    """Exact comparisons in double precision; the default dtype is restored for the rest of the session."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of two categorical distributions, straight from the definition."""
    return (p * (p.log() - q.log())).sum()


def enumerated(tokens: torch.Tensor, logits: torch.Tensor, p_old: torch.Tensor):
    """A [n, 1] batch with one sampled token per row: (logp, logp_old, mask)."""
    logp = torch.log_softmax(logits, dim=0)[tokens][:, None]
    return logp, p_old.log()[tokens][:, None], torch.ones(len(tokens), 1, dtype=torch.bool)


def grad(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(loss, x)[0]


# ------------------------------------------------------------------------------------------------ KL terms


def test_beta1_term_is_reverse_kl_in_value_and_gradient():
    logits, p_old = torch.tensor(LOGITS, requires_grad=True), torch.tensor(P_OLD)
    logp, logp_old, mask = enumerated(ENUM_OLD, logits, p_old)
    loss, stats = soft_grpo_loss(logp, logp_old, torch.zeros(4), mask, clip_eps=0.0, beta1=1.0, beta2=0.0)
    expected = kl(torch.softmax(logits, dim=0), p_old)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert stats["kl_reverse"] == pytest.approx(expected.item(), abs=1e-6)
    torch.testing.assert_close(grad(loss, logits), grad(expected, logits), atol=1e-6, rtol=0)


def test_beta2_term_has_the_gradient_of_forward_kl():
    logits, p_old = torch.tensor(LOGITS, requires_grad=True), torch.tensor(P_OLD)
    logp, logp_old, mask = enumerated(ENUM_OLD, logits, p_old)
    beta2 = 0.3
    loss, stats = soft_grpo_loss(logp, logp_old, torch.zeros(4), mask, clip_eps=0.0, beta1=0.0, beta2=beta2)
    forward = kl(p_old, torch.softmax(logits, dim=0))
    entropy_old = -(p_old * p_old.log()).sum()
    assert loss.item() == pytest.approx(beta2 * (forward + entropy_old).item(), abs=1e-6)
    assert stats["kl_forward"] == pytest.approx(forward.item(), abs=1e-6)
    g = grad(loss, logits)
    assert g.abs().max() > 1e-3
    torch.testing.assert_close(g, grad(beta2 * forward, logits), atol=1e-6, rtol=0)


def test_k3_expectation_under_theta_is_kl_to_reference():
    p_theta, p_ref = torch.tensor(P_OLD), torch.tensor([0.2, 0.3, 0.5])
    per_token = k3(p_theta.log(), p_ref.log())
    assert (per_token >= 0).all()
    assert (p_theta * per_token).sum().item() == pytest.approx(kl(p_theta, p_ref).item(), abs=1e-6)
    # the same through grpo_kl_loss: samples from p_theta itself (rho = 1), advantage 0, kl_beta 1
    logp = p_theta.log()[ENUM_OLD][:, None]
    mask = torch.ones(4, 1)
    loss, stats = grpo_kl_loss(logp, logp, torch.zeros(4), mask, logp_ref=p_ref.log()[ENUM_OLD][:, None], kl_beta=1.0)
    assert loss.item() == pytest.approx(kl(p_theta, p_ref).item(), abs=1e-6)
    assert stats["kl_ref"] == pytest.approx(kl(p_theta, p_ref).item(), abs=1e-6)


@given(st.floats(-20, 20), st.floats(-20, 20))
def test_k3_is_non_negative(logp: float, logp_ref: float):
    assert k3(torch.tensor(logp), torch.tensor(logp_ref)).item() >= 0


# ------------------------------------------------------------------------------------------------ surrogate


@pytest.mark.parametrize("detach_old", [True, False])  # the loss must detach logp_old itself
@pytest.mark.parametrize("clip_eps", [0.0, 0.2])
@pytest.mark.parametrize("A", [1.5, -0.7])
def test_surrogate_at_rho_one_is_the_policy_gradient(clip_eps: float, A: float, detach_old: bool):
    logits = torch.tensor(LOGITS, requires_grad=True)
    x = 1
    logp = torch.log_softmax(logits, dim=0)[x].reshape(1, 1)
    logp_old = logp.detach() if detach_old else logp
    loss, stats = soft_grpo_loss(logp, logp_old, torch.tensor([A]), torch.ones(1, 1), clip_eps=clip_eps,
                                 beta1=0.0, beta2=0.0)
    # d log softmax(z)_x / dz = onehot(x) - softmax(z)
    expected = -A * (torch.nn.functional.one_hot(torch.tensor(x), 3) - torch.softmax(logits.detach(), dim=0))
    torch.testing.assert_close(grad(loss, logits), expected, atol=1e-9, rtol=0)
    assert loss.item() == pytest.approx(-A)
    assert stats["ratio_mean"] == pytest.approx(1.0)
    assert stats["clip_frac"] == 0.0


@pytest.mark.parametrize("A, rho, clip_eps, clipped", [
    (1.0, 1.5, 0.2, True),    # A > 0, rho above 1+eps: clipped, no gradient
    (-1.0, 0.5, 0.2, True),   # A < 0, rho below 1-eps: clipped, no gradient
    (1.0, 1.5, 0.0, False),   # unclipped objective keeps the gradient
    (-1.0, 1.5, 0.2, False),  # A < 0, rho above 1+eps: min picks the unclipped term
    (1.0, 0.5, 0.2, False),   # A > 0, rho below 1-eps: likewise
])
def test_clipping(A: float, rho: float, clip_eps: float, clipped: bool):
    logits = torch.tensor(LOGITS, requires_grad=True)
    logp = torch.log_softmax(logits, dim=0)[0].reshape(1, 1)
    logp_old = logp.detach() - math.log(rho)
    loss, stats = soft_grpo_loss(logp, logp_old, torch.tensor([A]), torch.ones(1, 1), clip_eps=clip_eps,
                                 beta1=0.0, beta2=0.0)
    g = grad(loss, logits)
    assert stats["ratio_mean"] == pytest.approx(rho)
    assert stats["clip_frac"] == (1.0 if clipped else 0.0)
    if clipped:
        assert loss.item() == pytest.approx(-A * (1 + clip_eps if A > 0 else 1 - clip_eps))
        assert torch.equal(g, torch.zeros(3))
    else:
        # d(-rho A)/dz = -A rho (onehot(0) - softmax(z))
        expected = -A * rho * (torch.tensor([1.0, 0, 0]) - torch.softmax(logits.detach(), dim=0))
        torch.testing.assert_close(g, expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("A", [1.0, -1.0])
def test_clip_zeroes_the_surrogate_gradient_exactly_where_it_acts(A: float):
    """Per token: rho outside [1-eps, 1+eps] on the side A pushes it to gets no surrogate gradient; every other
    token gets -A rho (token aggregation over n tokens: divided by n)."""
    rho = torch.tensor([[0.5, 0.9, 1.0, 1.1, 1.5]])
    logp = torch.full((1, 5), -1.0, requires_grad=True)
    loss, stats = soft_grpo_loss(logp, logp.detach() - rho.log(), torch.tensor([A]), torch.ones(1, 5), clip_eps=0.2,
                                 beta1=0.0, beta2=0.0, aggregation="token")
    clipped = rho > 1.2 if A > 0 else rho < 0.8
    assert stats["clip_frac"] == pytest.approx(0.2)
    torch.testing.assert_close(grad(loss, logp), torch.where(clipped, 0.0, -A * rho / 5), atol=1e-12, rtol=0)


RHOS = torch.tensor([[0.6, 0.9, 1.0, 1.4]], dtype=torch.float64)


def kl_terms_gradient(rho: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """d soft_grpo_loss / d logp with the surrogate's part taken out: beta1 rho (log rho + 1) - beta2 per token
    (token aggregation over n tokens: divided by n), from the loss itself."""
    logp = torch.full(rho.shape, -1.0, requires_grad=True)
    A, mask = torch.tensor([0.8]), torch.ones(rho.shape)

    def g(b1: float, b2: float) -> torch.Tensor:
        loss, _ = soft_grpo_loss(logp, logp.detach() - rho.log(), A, mask, clip_eps=0.2, beta1=b1, beta2=b2,
                                 aggregation="token")
        return grad(loss, logp)
    return g(beta1, beta2) - g(0.0, 0.0)


def test_kl_terms_cancel_at_rho_one_so_one_update_per_batch_is_reinforce():
    """At rho = 1, the first (and with one step per batch, only) update, beta1 = beta2 terms' gradients cancel:
    Soft-GRPO is then group-normalized REINFORCE. Only later steps of an epoch / minibatch loop see rho != 1."""
    ones = torch.ones_like(RHOS)
    assert torch.equal(kl_terms_gradient(ones, 0.05, 0.05), torch.zeros_like(ones))
    torch.testing.assert_close(kl_terms_gradient(ones, 0.3, 0.05), torch.full_like(ones, 0.25 / 4))


@pytest.mark.parametrize("beta1, beta2", [(0.05, 0.05), (0.3, 0.05), (0.05, 0.3)])
def test_kl_terms_shape_the_gradient_away_from_rho_one(beta1: float, beta2: float):
    g = kl_terms_gradient(RHOS, beta1, beta2)
    torch.testing.assert_close(g, (beta1 * RHOS * (RHOS.log() + 1) - beta2) / 4, atol=1e-12, rtol=0)
    off = RHOS != 1
    assert (g[off].abs() > 1e-3).all()
    assert not torch.allclose(g, kl_terms_gradient(RHOS, beta1 + 0.1, beta2))
    assert not torch.allclose(g, kl_terms_gradient(RHOS, beta1, beta2 + 0.1))


def test_clip_frac_counts_tokens():
    logp = torch.zeros(2, 2, requires_grad=True)
    logp_old = torch.tensor([[-math.log(1.5), 0.0], [0.0, 0.0]])  # rho = 1.5 on one of the 4 tokens
    _, stats = soft_grpo_loss(logp, logp_old, torch.tensor([1.0, 1.0]), torch.ones(2, 2))
    assert stats["clip_frac"] == pytest.approx(0.25)


# ------------------------------------------------------------------------------------------------ aggregation


PER_TOKEN = torch.tensor([[1.0, 2.0, 6.0], [10.0, 100.0, 100.0], [100.0, 100.0, 100.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)


def test_aggregation_token_vs_sequence():
    assert aggregate(PER_TOKEN, MASK, "token").item() == pytest.approx((1 + 2 + 6 + 10) / 4)
    assert aggregate(PER_TOKEN, MASK, "sequence").item() == pytest.approx((3 + 10) / 2)  # empty row left out
    assert aggregate(PER_TOKEN, MASK.double(), "sequence").item() == pytest.approx(6.5)


@pytest.mark.parametrize("mode", ["token", "sequence"])
def test_all_padding_gives_zero_not_nan(mode: str):
    assert aggregate(PER_TOKEN, torch.zeros_like(MASK), mode).item() == 0.0


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_loss_with_an_empty_row_is_finite(aggregation: str):
    logp = torch.full((3, 3), -1.0, requires_grad=True)
    loss, stats = soft_grpo_loss(logp, logp.detach() + 0.1, torch.tensor([1.0, -1.0, 2.0]), MASK,
                                 aggregation=aggregation)
    assert torch.isfinite(loss) and all(math.isfinite(v) for v in stats.values())
    g = grad(loss, logp)
    assert torch.isfinite(g).all() and torch.equal(g[2], torch.zeros(3))


def test_unknown_aggregation():
    with pytest.raises(ValueError, match="median"):
        aggregate(PER_TOKEN, MASK, "median")


# ------------------------------------------------------------------------------------------------ advantages


REWARDS = [1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 4.0, 4.0]  # group 1: mean 3, population var 14/4; group 2: mean 2, std 2


def test_group_advantages_hand_computed():
    with_std = get_advantage("grpo")(np.array(REWARDS), 4)
    expected = [-2 / math.sqrt(3.5), -1 / math.sqrt(3.5), 0.0, 3 / math.sqrt(3.5), -1.0, -1.0, 1.0, 1.0]
    assert with_std.dtype == np.float32
    np.testing.assert_allclose(with_std, expected, rtol=1e-5)
    no_std = get_advantage("grpo_no_std")(np.array(REWARDS), 4)
    assert no_std.dtype == np.float32
    np.testing.assert_allclose(no_std, [-2, -1, 0, 3, -2, -2, 2, 2])


def test_group_advantages_on_tensors():
    out = group_advantages(torch.tensor(REWARDS), 4, std_normalize=False)
    torch.testing.assert_close(out, torch.tensor([-2.0, -1, 0, 3, -2, -2, 2, 2]))


@pytest.mark.parametrize("name", ["grpo", "grpo_no_std"])
def test_equal_rewards_give_zero_advantage(name: str):
    out = get_advantage(name)(np.array([0.1, 0.1, 0.1, 0.0, 1.0, 2.0]), 3)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:3], 0.0, atol=1e-6)
    assert out[3] < 0 < out[5]


@pytest.mark.parametrize("n, group_size", [(7, 4), (4, 1)])
def test_bad_group_shapes(n: int, group_size: int):
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(np.zeros(n), group_size)


# ------------------------------------------------------------------------------------------------ registries


def test_registries():
    assert set(ADVANTAGES) >= {"grpo", "grpo_no_std"}
    assert get_loss("soft_grpo") is soft_grpo_loss and get_loss("grpo_kl") is grpo_kl_loss
    assert set(POLICY_LOSSES) >= {"soft_grpo", "grpo_kl"}


def test_unknown_names_raise_config_error():
    with pytest.raises(ConfigError, match="'ppo_typo'.*soft_grpo"):
        get_loss("ppo_typo")
    with pytest.raises(ConfigError, match="'gae'.*grpo"):
        get_advantage("gae")


def test_grpo_kl_needs_logp_ref():
    logp = torch.zeros(1, 2, requires_grad=True)
    with pytest.raises(ValueError, match="logp_ref"):
        get_loss("grpo_kl")(logp, logp.detach(), torch.ones(1), torch.ones(1, 2))
