"""Turn checkpoints into masks, scores and pictures: `python predict.py --help`."""

import hydra
from omegaconf import DictConfig

from brainseg.cli import run_task


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from brainseg.prediction.pipeline import predict  # torch: not needed for --help or --cfg

    run_task(predict, cfg)


if __name__ == "__main__":
    main()
