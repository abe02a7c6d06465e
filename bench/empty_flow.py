"""An empty Prefect flow, started the way `python -m flows.phase1` is: what the orchestrator costs."""

from prefect import flow


@flow(name="empty")
def empty() -> int:
    return 0


if __name__ == "__main__":
    empty()
