"""The command lines of the flows, one module per flow (`python -m flows.<flow>` runs its `run()`),
each built from the flow's parameters (flows/params.py). They import Prefect only once a flow is
about to run, so `--help` and usage errors answer at once."""
