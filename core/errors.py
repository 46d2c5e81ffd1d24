"""The one exception type for bad input: its message is one line naming the setting."""


class ConfigError(ValueError):
    """A setting, file or shape that cannot work; the message names it and what is allowed."""
