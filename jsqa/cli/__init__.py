"""`jsqa` command line: one module per subcommand, each a thin shell over library functions.

A stage's module (``jsqa/cli/<stage>.py``) declares its arguments and reads params.yaml once
into typed config; :mod:`jsqa.cli.app` assembles the parser. Modules import the library lazily,
inside ``run``, so ``jsqa --help`` stays fast and a stage's DVC deps are exactly what it imports.
"""

import os

# torch's CPU threads are GNU OpenMP (libgomp) threads, which spin between parallel regions unless
# told to sleep; on a loaded machine that spinning made a small model's fine-tuning epoch 3-30x
# slower (benchmarks/threads_under_load.py says why and measures it). libgomp reads the policy
# once, when torch is imported, so it is set here, before any subcommand imports torch; stage,
# torchrun and pool worker processes inherit it. A value the caller set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from jsqa.cli.app import main  # after the policy: nothing may load torch before it

__all__ = ["main"]
