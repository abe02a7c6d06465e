"""An empty Prefect flow, started the way this project's commands start theirs (flows/cli.py:
a temporary Prefect server unless PREFECT_API_URL is set): what the orchestrator itself costs."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows import startup  # noqa: E402

startup.begin(None)  # as `python -m flows.<command>` does, before Prefect is imported

from prefect import flow  # noqa: E402

from flows import cli, orchestrator  # noqa: E402


@flow(name="empty")
def empty() -> int:
    return 0


def main() -> int:
    with orchestrator.connected(orchestrator.start()):
        empty()
    return 0


if __name__ == "__main__":
    cli.run_command(main)
