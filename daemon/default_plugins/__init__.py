"""The built-in plugins.

They are published under the ``contactsync`` entry-point group in ``pyproject.toml``, exactly
like a third-party plugin, so they are found only through an installed distribution
(``pip install -e .`` in a checkout) and can be blocked by name like any other.
"""
