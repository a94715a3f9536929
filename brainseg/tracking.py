"""Experiment-tracker facts shared by training (per-run loggers) and reporting (the sweep's run),
kept free of Lightning so that reporting does not import the trainer."""

from __future__ import annotations

import netrc
import os
from urllib.parse import urlparse


def wandb_credentials() -> bool:
    """Whether W&B could log online without asking for a key (env var or ~/.netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
