"""The `channels_last` and `compile` training settings: checkpoints stay loadable by predict.

Inductor (torch.compile's default backend) takes about a minute to compile even the tiny test
network on a 2-core CPU, so the tests compile with dynamo's `eager` backend: the network is
traced and run as a compiled graph, only the code generation is skipped.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from helpers import compose_run

from brainseg.models import build_model
from brainseg.prediction.members import load_checkpoint
from brainseg.training.pipeline import train
from brainseg.training.speed_settings import apply_speed_settings

TINY_NET = {
    "arch": "unet",
    "encoder_name": "resnet18",
    "encoder_depth": 3,
    "decoder_channels": [32, 16, 8],
}


@pytest.fixture
def eager_compile(monkeypatch: pytest.MonkeyPatch) -> list:
    """torch.compile with the `eager` backend; the list collects what dynamo compiled."""
    compiled: list = []

    def backend(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        compiled.append(graph)
        return graph.forward

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    yield compiled
    torch._dynamo.reset()


def test_compiled_network_keeps_plain_state_dict_keys(eager_compile: list) -> None:
    torch.manual_seed(0)
    net = build_model(**TINY_NET)
    plain = build_model(**TINY_NET)
    plain.load_state_dict(net.state_dict())
    apply_speed_settings(net, channels_last=True, compile=True)
    image = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(
        net(image), plain(image), atol=1e-4, rtol=1e-4
    )  # NHWC kernels sum in another order
    assert eager_compile, "the network's forward did not go through torch.compile"
    assert list(net.state_dict()) == list(plain.state_dict())  # no `_orig_mod.` prefix
    assert all(
        p.is_contiguous(memory_format=torch.channels_last) for p in net.parameters() if p.dim() == 4
    )


@pytest.mark.slow
def test_fit_with_speed_settings_gives_a_checkpoint_predict_loads(
    synthetic_root: Path, tmp_path: Path, eager_compile: list
) -> None:
    run = tmp_path / "run"
    cfg = compose_run(
        synthetic_root,
        run,
        tmp_path / "cache",
        "channels_last=true",
        "compile=true",
        "trainer.max_epochs=1",
    )
    conv_inputs: set[bool] = set()  # whether each convolution's input was in channels_last order

    def record(module: torch.nn.Module, args: tuple) -> None:
        # The trained network's convolutions only (weights in channels_last order): the final
        # validation after training predicts with a plain network, as predict.py does.
        if (
            isinstance(module, torch.nn.Conv2d)
            and args[0].shape[-1] > 1
            and module.weight.is_contiguous(memory_format=torch.channels_last)
            and not module.weight.is_contiguous()
        ):
            conv_inputs.add(args[0].is_contiguous(memory_format=torch.channels_last))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        train(cfg)
    finally:
        handle.remove()
    assert eager_compile and conv_inputs == {True}
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    keys = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in k for k in keys)
    member = load_checkpoint(best)  # strict load into a plain network
    assert member(torch.randn(1, 3, 32, 32)).shape == (1, 1, 32, 32)
