"""The `channels_last` and `compile` settings of conf/train.yaml (docs/gpu.md)."""

from __future__ import annotations

import torch


def _channels_last_input(net: torch.nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])


def apply_speed_settings(net: torch.nn.Module, channels_last: bool, compile: bool) -> None:
    """Applied in place. channels_last: weights and inputs in NHWC order (what tensor cores read
    natively). `nn.Module.compile` compiles in place, so `state_dict` keys (and the checkpoints
    predict.py loads) stay those of the plain network, without torch.compile's `_orig_mod.`."""
    if channels_last:
        net.to(memory_format=torch.channels_last)
        net.register_forward_pre_hook(_channels_last_input)
    if compile:
        net.compile()
