"""Train one configuration, or sweep many with -m: `python train.py -m model=unet,unetpp loss=dice,bce_dice`."""

import hydra
from omegaconf import DictConfig

from brainseg.cli import run_task
from brainseg.training.pipeline import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the best validation mean per-volume Dice, the value sweepers optimise
    (None for a failed sweep job: Optuna records the trial as failed)."""
    metrics = run_task(train, cfg)
    best = (metrics or {}).get("best") or {}
    return best.get("dsc_volume_mean")


if __name__ == "__main__":
    main()
