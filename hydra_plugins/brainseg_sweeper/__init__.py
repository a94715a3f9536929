"""brainseg's Optuna sweeper and its pruning callback (Hydra loads sweepers only from the
`hydra_plugins` namespace)."""
