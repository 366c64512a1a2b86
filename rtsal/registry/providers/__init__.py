"""Built-in black-box providers. Each module is a plugin, registered like third-party ones."""
