"""The flows: one file per command, each a thin Prefect flow over the plain functions in tasks/.

Started as `python -m flows.<command>`, a command starts up here, before its module imports
Prefect, pandas and pandera (flows/startup.py): the temporary Prefect server is spawned so the two
boot side by side, and garbage collection waits until the imports are done.
"""

import sys

if getattr(sys, "orig_argv", None):
    from flows import startup

    startup.begin(sys.orig_argv)
