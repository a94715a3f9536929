"""Less noise from libraries: drop the lines that only advertise, repeat, or report on settings
brainseg itself chose; real warnings stay."""

from __future__ import annotations

import logging
import warnings

# Libraries whose INFO lines flood the log during ONNX export.
WARNINGS_ONLY = ("onnxscript", "onnx_ir")


def _no_tip(record: logging.LogRecord) -> bool:
    """Lightning's advertisements of its cloud services."""
    return not record.getMessage().startswith("💡 Tip:")


def quiet_libraries() -> None:
    """Install the filters (idempotent). Call once the log handlers are configured (Hydra's)."""
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _no_tip not in tips.filters:
        tips.addFilter(_no_tip)
    for name in WARNINGS_ONLY:
        logging.getLogger(name).setLevel(logging.WARNING)
    # `lightning` adds its own console handler on import; under Hydra's handlers every Lightning
    # line would be printed twice.
    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()
    # Raised inside Lightning on every run with the pinned torch; nothing a user can change.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # On every start wherever `srun` is on the PATH (every SLURM login node); brainseg's SLURM
    # jobs are started by srun through hydra/launcher=slurm, where Lightning does not say it.
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")
    # On every resume, about the checkpoints it resumes from (other starts there are refused).
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
