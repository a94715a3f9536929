"""Train one configuration, or sweep many with -m: `python train.py -m model=unet,unetpp loss=dice,bce_dice`."""

import hydra
from omegaconf import DictConfig

from brainseg.cli import run_task


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the best validation mean per-volume Dice, the value sweepers optimise; NaN for a
    failed sweep job, which Optuna records as a failed trial while the study goes on."""
    from brainseg.training.pipeline import train  # torch and Lightning: not needed for --help or --cfg

    metrics = run_task(train, cfg)
    if metrics is None:
        return float("nan")
    return (metrics.get("best") or {}).get("dsc_volume_mean")


if __name__ == "__main__":
    main()
