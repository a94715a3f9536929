"""Train one configuration, or sweep many with -m:
`python train.py -m model=unet,unetpp loss=dice,bce_dice`."""

import hydra
from omegaconf import DictConfig

from brainseg.cli import run_task


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the run's headline (RunMetrics.headline), the value sweepers optimise in its
    direction (None for a failed job of Hydra's basic sweeper, which goes on with the others)."""
    from brainseg.training.pipeline import train  # torch, Lightning: not for --help, --cfg

    metrics = run_task(train, cfg)
    return metrics.headline if metrics else None


if __name__ == "__main__":
    main()
