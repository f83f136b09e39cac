"""The diffusion math: schedule, EDM coefficients, the denoiser's symmetry, CFG and the samplers."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from r4t.diffusion.denoiser import DenoiserConfig, EDMDenoiser, canonical_order, denoising_loss, parameter_count
from r4t.diffusion.edm import c_in, c_noise, c_out, c_skip, karras_sigmas, loss_weight, training_sigma
from r4t.config import DiffusionConfig, PipelineConfig, SamplerConfig, load_config
from r4t.diffusion.samplers import check_sampler_range, generate_sets, guided, sample
from r4t.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_schedule_endpoints_and_order():
    s = karras_sigmas(32, 1e-4, 80.0)
    assert len(s) == 33
    assert s[0].item() == pytest.approx(80.0) and s[31].item() == pytest.approx(1e-4) and s[32].item() == 0
    assert bool((s[1:] < s[:-1]).all())
    assert karras_sigmas(1, 1e-4, 80.0).tolist() == [pytest.approx(80.0), 0.0]
    with pytest.raises(ValueError):
        karras_sigmas(8, 1.0, 0.5)


def test_preconditioning_known_values():
    sd, s = 0.5, torch.tensor(0.5)
    assert c_skip(s, sd).item() == pytest.approx(0.5)
    assert c_out(s, sd).item() == pytest.approx(0.25 / math.sqrt(0.5))
    assert c_in(s, sd).item() == pytest.approx(1 / math.sqrt(0.5))
    assert loss_weight(s, sd).item() == pytest.approx(8.0)
    assert c_noise(torch.tensor(1.0)).item() == 0.0
    sig = torch.logspace(-4, 2, 13, dtype=torch.float64)
    # lambda * c_out^2 = 1: the weighted loss is the unit-variance loss of F at every sigma.
    torch.testing.assert_close(loss_weight(sig, 0.05) * c_out(sig, 0.05) ** 2, torch.ones_like(sig))
    # sigma -> 0: D -> x (c_skip -> 1, c_out -> 0); sigma -> inf: c_skip -> 0.
    assert c_skip(torch.tensor(1e-6), 0.05).item() == pytest.approx(1.0)
    assert c_skip(torch.tensor(1e3), 0.05).item() == pytest.approx(0.0, abs=1e-8)


def test_training_sigma_is_relative_to_sigma_data():
    g = torch.Generator().manual_seed(0)
    sig = training_sigma(20000, 0.05, math.log(0.6), 1.2, g)
    assert torch.log(sig / 0.05).mean().item() == pytest.approx(math.log(0.6), abs=0.03)
    assert torch.log(sig / 0.05).std().item() == pytest.approx(1.2, abs=0.03)


def test_paper_preset_parameter_count():
    model = EDMDenoiser(DenoiserConfig.from_preset("paper", dim=128), sigma_data=0.088)
    assert model.cfg.rows == 12 and model.cfg.layers == 6 and model.cfg.heads == 16
    assert parameter_count(model) == pytest.approx(53.9e6, rel=0.01)  # the paper: 53.9M


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="model.preset"):
        DenoiserConfig.from_preset("huge", dim=8)
    with pytest.raises(ConfigError, match="model.hidden"):
        DenoiserConfig(dim=8, hidden=30, heads=4)
    with pytest.raises(ConfigError, match="sampler.method"):
        SamplerConfig(method="ddim")


def _random_model(dim=16, rows=6, seed=0) -> EDMDenoiser:
    torch.manual_seed(seed)
    model = EDMDenoiser(DenoiserConfig(dim=dim, rows=rows, hidden=32, mlp=64, heads=4, layers=2), 0.25)
    torch.nn.init.normal_(model.net.out_proj.weight, std=0.2)  # zero-initialized output would hide everything
    return model.eval()


def test_permutation_equivariance():
    model = _random_model()
    x, q = torch.randn(3, 6, 16), torch.randn(3, 16)
    sigma = torch.tensor([0.01, 0.3, 5.0])
    perm = torch.randperm(6)
    with torch.no_grad():
        out = model(x, sigma, model.context(q))
        out_perm = model(x[:, perm], sigma, model.context(q))
        torch.testing.assert_close(out_perm, out[:, perm], atol=1e-5, rtol=1e-5)
        # With padding rows: permuting rows and their mask together still commutes.
        valid = torch.tensor([[True] * 4 + [False] * 2] * 3)
        out = model(x, sigma, model.context(q), valid)
        out_perm = model(x[:, perm], sigma, model.context(q), valid[:, perm])
        torch.testing.assert_close(out_perm, out[:, perm], atol=1e-5, rtol=1e-5)
        # The condition matters (otherwise cross-attention would be decorative).
        assert not torch.allclose(model(x, sigma, model.context(-q)), model(x, sigma, model.context(q)))


def test_padding_rows_do_not_change_valid_rows():
    model = _random_model()
    x, q, sigma = torch.randn(2, 6, 16), torch.randn(2, 16), torch.tensor([0.2, 0.7])
    valid = torch.tensor([[True] * 4 + [False] * 2] * 2)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(2, 2, 16) * 10
    with torch.no_grad():
        a = model(x, sigma, model.context(q), valid)[:, :4]
        b = model(x2, sigma, model.context(q), valid)[:, :4]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_cfg_zero_is_conditional_and_batched_cfg_matches_two_passes():
    model = _random_model()
    x, q, sigma = torch.randn(3, 6, 16), torch.randn(3, 16), torch.tensor(0.4)
    with torch.no_grad():
        cond = model(x, sigma.expand(3), model.context(q))
        null = model(x, sigma.expand(3), model.context(q, drop=torch.ones(3, dtype=torch.bool)))
        torch.testing.assert_close(guided(model, q, 0.0)(x, sigma), cond)
        torch.testing.assert_close(guided(model, q, 0.7)(x, sigma), cond + 0.7 * (cond - null), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(cond, null)


def test_loss_ignores_padding_and_drops_condition():
    model = _random_model()
    x0, q = torch.randn(4, 6, 16) * 0.25, torch.randn(4, 16)
    sigma, noise = torch.full((4,), 0.3), torch.randn(4, 6, 16)
    valid = torch.ones(4, 6, dtype=torch.bool)
    valid[:, 5] = False
    keep = torch.zeros(4, dtype=torch.bool)
    base = denoising_loss(model, x0, q, sigma, noise, keep, valid)
    x0b = x0.clone()
    x0b[:, 5] += 3.0  # a padding row's value must not matter
    noise_b = noise.clone()
    noise_b[:, 5] = 0
    assert denoising_loss(model, x0b, q, sigma, noise_b, keep, valid).item() == pytest.approx(base.item(), rel=1e-5)
    dropped = denoising_loss(model, x0, torch.randn(4, 16), sigma, noise, torch.ones(4, dtype=torch.bool), valid)
    assert dropped.item() == pytest.approx(
        denoising_loss(model, x0, q, sigma, noise, torch.ones(4, dtype=torch.bool), valid).item(), rel=1e-6)


def _gaussian_denoiser(mean: torch.Tensor, cov: torch.Tensor):
    """The exact x0 estimate E[x0 | x] for x0 ~ N(mean, cov) (each row independent), x = x0 + sigma n."""
    eye = torch.eye(len(mean), dtype=cov.dtype)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        gain = cov @ torch.linalg.inv(cov + float(sigma) ** 2 * eye)
        return mean + (x - mean) @ gain.T

    return denoise


@pytest.mark.parametrize("method,steps,churn", [("euler", 256, 0.0), ("heun", 48, 0.0), ("heun", 48, 10.0),
                                                 ("sde", 256, 0.0)])
def test_samplers_recover_a_gaussian(method, steps, churn):
    torch.manual_seed(0)
    d = 4
    mean = torch.tensor([0.5, -0.3, 0.0, 0.2], dtype=torch.float64)
    a = torch.randn(d, d, dtype=torch.float64) * 0.3
    cov = a @ a.T + 0.01 * torch.eye(d, dtype=torch.float64)
    settings = SamplerConfig(method=method, steps=steps, sigma_min=1e-3, sigma_max=20.0, churn=churn,
                               churn_min=0.01, churn_max=1.0)
    g = torch.Generator().manual_seed(1)
    x = sample(_gaussian_denoiser(mean, cov), (4000, 2, d), settings, g, dtype=torch.float64).reshape(-1, d)
    torch.testing.assert_close(x.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.03, rtol=0.1)
    # Same generator seed, same samples.
    again = sample(_gaussian_denoiser(mean, cov), (4000, 2, d), settings, torch.Generator().manual_seed(1),
                   dtype=torch.float64).reshape(-1, d)
    torch.testing.assert_close(again, x)


@pytest.mark.parametrize("job", ["demo", "pipeline", "diffusion"])
def test_training_draws_the_noise_levels_the_sampler_visits(job):
    """Each job file's sampler starts and ends at noise levels its training draws with non-negligible probability
    (the network is never evaluated where it was not trained), and loading refuses a sampler outside them."""
    cfg = load_config(DiffusionConfig if job == "diffusion" else PipelineConfig, REPO / "jobs" / f"{job}.yaml")
    t, s, sigma_data = cfg.train, cfg.sampler, 0.051  # sigma_data of both built-in datasets' targets
    sig = training_sigma(200_000, sigma_data, t.p_mean, t.p_std, torch.Generator().manual_seed(0),
                         uniform=t.sigma_uniform, sigma_min=t.sigma_min, sigma_max=t.sigma_max)
    assert (sig >= s.sigma_max / 1.5).float().mean().item() > 1e-2
    assert (sig <= s.sigma_min * 1.5).float().mean().item() > 1e-2
    manifest = {"sigma_data": sigma_data, "train": {k: getattr(t, k) for k in t.__dataclass_fields__}}
    check_sampler_range(s, manifest)
    with pytest.raises(ConfigError, match="sampler.sigma_max=80"):  # the paper's range, far above these data
        check_sampler_range(dataclasses.replace(s, sigma_max=80.0), manifest)
    # The log-normal alone (the former training) never reaches sigma = 80: the check says so too.
    lognormal = {**manifest, "train": {**manifest["train"], "sigma_uniform": 0.0}}
    with pytest.raises(ConfigError, match="sampler.sigma_max=2"):
        check_sampler_range(s, lognormal)


def _context_model(seed=0, **cfg) -> EDMDenoiser:
    torch.manual_seed(seed)
    model = EDMDenoiser(DenoiserConfig(**{"dim": 16, "rows": 5, "hidden": 32, "mlp": 64, "heads": 4, "layers": 2,
                                          "context_items": 4, **cfg}), 0.25)
    torch.nn.init.normal_(model.net.out_proj.weight, std=0.2)
    torch.nn.init.normal_(model.net.item_rank, std=0.2)
    return model.eval()


def test_context_items_condition_the_rows_and_padding_and_dropping_hide_them():
    model = _context_model()
    x, q, sigma = torch.randn(2, 5, 16), torch.randn(2, 16), torch.tensor([0.3, 1.5])
    items, valid = torch.randn(2, 4, 16), torch.tensor([[True, True, True, False]] * 2)
    other = items.clone()
    other[:, 3] = torch.randn(2, 16) * 5  # only a padded item changes
    with torch.no_grad():
        out = model(x, sigma, model.context(q, items, valid))
        torch.testing.assert_close(model(x, sigma, model.context(q, other, valid)), out)
        other[:, 0] += 1.0  # a listed item changes: so do the rows
        assert not torch.allclose(model(x, sigma, model.context(q, other, valid)), out)
        drop = torch.ones(2, dtype=torch.bool)  # dropped: neither the query nor any item is seen
        torch.testing.assert_close(model(x, sigma, model.context(q, items, valid, drop)),
                                   model(x, sigma, model.context(-q, other, valid, drop)))
    with pytest.raises(ValueError, match="4 context items"):
        model.context(q)


def test_context_equals_each_map_applied_to_the_ranked_tokens():
    """The condition is computed in one product with the rank vectors projected apart; it must equal the
    definition: every block's key/value map and the copy key applied to [query, item + rank, constant], in
    values and in the gradients of every parameter."""
    model = _context_model()
    with torch.no_grad():
        model.net.item_rank.normal_()
    net, q, items = model.net, torch.randn(3, 16), torch.randn(3, 4, 16)
    drop = torch.tensor([False, True, False])

    def definition():
        cond = torch.where(drop[:, None], net.null_condition, q)
        ranked = items + net.item_rank
        tokens = torch.cat([cond[:, None], ranked, net.context_token.expand_as(cond)[:, None]], dim=1)
        return [t for block in net.blocks for t in block.cross_attn.keys_values(tokens)] + [net.copy_key(ranked)]

    ctx = model.context(q, items, drop=drop)
    fast = [t for kv in ctx.kv for t in kv] + [ctx.copy_keys[:, :-1]]
    for a, b in zip(fast, definition()):
        torch.testing.assert_close(a, b)
    weights = [torch.randn_like(t) for t in fast]
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, fast)), params, allow_unused=True)
    expected = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, definition())), params,
                                   allow_unused=True)
    for g, e in zip(grads, expected):
        if e is None:
            assert g is None or not g.any()
        else:
            torch.testing.assert_close(g, e)


def test_copy_head_carries_items_past_the_hidden_width():
    """At a high noise level D ≈ the copy P: with the copy head's attention set sharply onto item 0, every row is
    that item's embedding in all d dimensions, whatever the network's hidden width."""
    model = _context_model(hidden=8, heads=2)
    net = model.net
    with torch.no_grad():
        for layer in (net.copy_key, net.copy_query, net.out_proj):
            layer.weight.zero_()
            layer.bias.zero_()
        net.item_rank.zero_()
        net.item_rank[0, 0] = 1.0  # item 0's place in the list: coordinate 0
        net.copy_key.weight[:, 0] = 1.0  # every key reads coordinate 0: ones for item 0, zeros for the others
        net.copy_query.bias.fill_(1e3)
        net.copy_null.fill_(-1e3)
        items = torch.zeros(1, 4, 16)
        items[0, :, 1:] = torch.randn(4, 15)
        out = model(torch.randn(1, 5, 16) * 1e4, torch.tensor([1e4]), model.context(torch.randn(1, 16), items))
    torch.testing.assert_close(out[0], items[0, 0].expand(5, 16), atol=1e-3, rtol=1e-3)


def test_canonical_order_puts_context_items_first_by_their_rank():
    d = 8
    items = torch.nn.functional.normalize(torch.randn(1, 4, d), dim=-1)
    q = torch.nn.functional.normalize(torch.randn(1, d), dim=-1)
    near, far = torch.nn.functional.normalize(q + 0.1 * torch.randn(1, d), dim=-1), -q
    x0 = torch.stack([far[0], items[0, 2], near[0], items[0, 0], torch.zeros(d)])[None]
    valid = torch.tensor([[True, True, True, True, False]])
    out, out_valid = canonical_order(x0, valid, q, items, torch.ones(1, 4, dtype=torch.bool))
    expected = torch.stack([items[0, 0], items[0, 2], near[0], far[0], torch.zeros(d)])
    torch.testing.assert_close(out[0], expected)
    assert out_valid.tolist() == [[True, True, True, True, False]]


def test_paper_preset_with_context_trains_and_samples():
    """the paper's 53.9M configuration, conditioned on context items with row slots: one optimizer step changes
    the weights and lowers nothing to NaN, and a sampler draws finite rows from it."""
    torch.manual_seed(0)
    cfg = DenoiserConfig.from_preset("paper", dim=128, context_items=16, context_per_category=1, row_slots=True)
    model = EDMDenoiser(cfg, sigma_data=0.088)
    x0 = torch.nn.functional.normalize(torch.randn(2, cfg.rows, 128), dim=-1)
    q, items = torch.randn(2, 128), torch.randn(2, 16, 128)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    before = model.net.out_proj.weight.detach().clone()
    loss = denoising_loss(model, x0, q, torch.tensor([0.05, 1.0]), torch.randn_like(x0), torch.zeros(2, dtype=bool),
                          items=items)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.net.out_proj.weight)
    rows = generate_sets(model.eval(), q, SamplerConfig(steps=2), items=items)
    assert rows.shape == (2, 12, 128) and torch.isfinite(rows).all()
