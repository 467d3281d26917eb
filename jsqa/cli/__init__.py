"""`jsqa` command line: one module per subcommand, each a thin shell over library functions.

A stage's module (``jsqa/cli/<stage>.py``) declares its arguments and reads params.yaml once
into typed config; :mod:`jsqa.cli.app` assembles the parser. Modules import the library lazily,
inside ``run``, so ``jsqa --help`` stays fast and a stage's DVC deps are exactly what it imports.
"""

from jsqa.cli.app import main

__all__ = ["main"]
