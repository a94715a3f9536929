"""Pluggable losses: every named loss, weighted combinations, fp32 under autocast, clear errors."""

from __future__ import annotations

import pytest
import torch

from brainseg.errors import ConfigError
from brainseg.losses import ALIASES, build_loss


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(2, 1, 16, 16, generator=gen) > 0.7).float()
    logits = torch.randn(2, 1, 16, 16, generator=gen) + 4 * (target - 0.5)
    return logits, target


@pytest.mark.parametrize("name", sorted(ALIASES))
def test_each_loss_is_finite_and_rewards_better_logits(name: str, batch) -> None:
    logits, target = batch
    loss = build_loss({name: 1.0})
    good = loss(logits, target)
    perfect = loss(20 * (2 * target - 1), target)
    bad = loss(-logits, target)
    assert torch.isfinite(good) and perfect <= good < bad


def test_weighted_combination_is_the_weighted_sum(batch) -> None:
    logits, target = batch
    combined = build_loss({"bce": 0.3, "dice": 0.7})
    expected = 0.3 * build_loss({"bce": 1.0})(logits, target) + 0.7 * build_loss({"dice": 1.0})(
        logits, target
    )
    torch.testing.assert_close(combined(logits, target), expected)
    assert set(combined.components(logits, target)) == {"bce", "dice"}


def test_options_reach_the_loss(batch) -> None:
    logits, target = batch
    fn_heavy = build_loss({"tversky": 1.0}, {"tversky": {"alpha": 0.1, "beta": 0.9}})
    fp_heavy = build_loss({"tversky": 1.0}, {"tversky": {"alpha": 0.9, "beta": 0.1}})
    under = torch.full_like(logits, -10.0)  # predicts nothing: only false negatives
    assert fn_heavy(under, target) > fp_heavy(under, target)


def test_loss_is_fp32_under_autocast(batch) -> None:
    logits, target = batch
    loss = build_loss({"bce": 0.5, "dice": 0.5})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(logits.bfloat16(), target)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss(logits.bfloat16().float(), target))


def test_unknown_loss_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"loss 'dise' is unknown; choose from \['bce', 'dice'"):
        build_loss({"dise": 1.0})
    with pytest.raises(ConfigError, match="loss.terms.focal: .*not_a_parameter"):
        build_loss({"focal": 1.0}, {"focal": {"not_a_parameter": 1}})
    with pytest.raises(
        ConfigError, match=r"loss.options.dice: no such term in loss.terms \['bce'\]"
    ):
        build_loss({"bce": 1.0}, {"dice": {}})
    with pytest.raises(ConfigError, match="loss.terms.mine: .*torch.nn.NoSuchLoss"):
        build_loss({"mine": {"_target_": "torch.nn.NoSuchLoss"}})


def test_any_target_is_a_term(batch) -> None:
    logits, target = batch
    loss = build_loss(
        {"dice": 1.0, "bce_torch": {"_target_": "torch.nn.BCEWithLogitsLoss", "weight": 0.5}}
    )
    expected = build_loss({"dice": 1.0})(logits, target) + 0.5 * torch.nn.BCEWithLogitsLoss()(
        logits, target
    )
    torch.testing.assert_close(loss(logits, target), expected)
    assert loss.weights == {"dice": 1.0, "bce_torch": 0.5}
