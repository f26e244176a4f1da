"""``python -m daemon``: the same as the ``contactsync`` command."""

from daemon.cli import main

main()
