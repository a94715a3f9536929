"""User-facing errors: each one is printed as a single line naming the file or setting at fault."""


class BrainsegError(Exception):
    """Base class for errors caused by user input (data or configuration), not by a bug."""


class DataError(BrainsegError):
    """The data on disk does not match the kaggle_3m layout or is unreadable."""


class ConfigError(BrainsegError):
    """A configuration value is invalid; the message names the setting."""
