"""Training: the LightningModule, run reporting, and the Hydra-driven `train` pipeline."""
