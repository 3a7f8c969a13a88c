"""What the daemon and its clients agree on: model, protocol, codec, config, keys, client."""

__version__ = "0.1.0"
