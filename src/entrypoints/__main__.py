"""``python -m entrypoints``: the ``taskflow-link`` command, where the script is not on PATH."""

from entrypoints.cli import main

main()
