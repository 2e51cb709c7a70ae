"""Reading a flow run's task runs and artifacts back from the Prefect API, as the tests check them."""

from __future__ import annotations

import asyncio


def task_runs_of(flow_run_id) -> list:
    """The task runs of a flow run, in the order they started (the API of the server in use)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    async def read():
        # Prefect 3.8's client sends null sort/limit/offset unless given, which its API rejects.
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=50,
            )

    return asyncio.run(read())


def task_states(flow_run_id) -> dict[str, str]:
    """Task name → final state type of each task run of a flow run."""
    return {r.name.rsplit("-", 1)[0]: r.state.type.value for r in task_runs_of(flow_run_id)}


def artifacts_of(flow_run_id) -> dict:
    """Artifact key → artifact, for the artifacts a flow run created."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, TaskRunFilter
    from prefect.client.schemas.sorting import ArtifactSort

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
                flow_run_filter=FlowRunFilter(),
                task_run_filter=TaskRunFilter(),
                sort=ArtifactSort.KEY_ASC,
                limit=20,
                offset=0,
            )

    return {a.key: a for a in asyncio.run(read())}
