"""What the W&B run tags hold, without a W&B run (offline runs: test_trackers.py)."""

from __future__ import annotations

from pathlib import Path

from brainseg.tracking import wandb_logger


def test_shared_overrides_become_tags(tmp_path: Path) -> None:
    logger = wandb_logger(
        save_dir=str(tmp_path),
        offline=True,
        tags=["baseline"],
        shared_overrides=["trainer.max_epochs=20", f"data.root={'x' * 80}"],
    )
    tags = logger._wandb_init["tags"]
    assert tags[:2] == ["baseline", "trainer.max_epochs=20"]
    assert tags[2] == f"data.root={'x' * 80}"[:64]  # W&B refuses tags over 64 characters
