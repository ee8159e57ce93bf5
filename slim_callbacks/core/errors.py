"""One exception family for every user-facing error of slim_callbacks."""


class SlimError(ValueError):
    """A bad argument, config key or network that slim_callbacks refuses.

    Raised before anything is changed: after a ``SlimError`` the network and the
    optimizer are exactly as they were.
    """


class ConfigError(SlimError):
    """A recipe or argument value that is not allowed.

    The message names the key path, the value and what is allowed, e.g.
    ``pruning.criterion: 'l3' is not one of l1_norm, l2_norm, fpgm, slim, opt_slim``.
    """

    def __init__(self, key, value, allowed):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}: {value!r} is not allowed; expected {allowed}")
