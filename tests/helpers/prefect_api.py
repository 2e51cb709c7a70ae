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


def logs_of(flow_run_id) -> list[tuple[int, str]]:
    """(level, message) of every log record of a flow run and its task runs, oldest first, as the
    Prefect API holds them (the records this process still buffers are sent first)."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()

    async def read():
        out = []
        async with get_client() as client:
            while True:
                page = await client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                    limit=200, offset=len(out), sort=LogSort.TIMESTAMP_ASC,
                )
                out += page
                if len(page) < 200:
                    return [(log.level, log.message) for log in out]

    return asyncio.run(read())


def flow_run_named(name_part: str):
    """The one flow run whose name contains ``name_part`` (a run id), as the API has it now."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    async def find():
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=name_part)),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=5, offset=0,
            )

    runs = asyncio.run(find())
    assert len(runs) == 1, [r.name for r in runs]
    return runs[0]


def flow_run_logs(name_part: str) -> list[str]:
    """The log messages of the one flow run whose name contains ``name_part`` (a run id), oldest first."""
    return [message for _, message in logs_of(flow_run_named(name_part).id)]


def task_states(flow_run_id) -> dict[str, str]:
    """Task name → final state type of each task run of a flow run."""
    return {r.name.rsplit("-", 1)[0]: r.state.type.value for r in task_runs_of(flow_run_id)}


def artifacts_of(flow_run_id, scope: str | None = None) -> dict:
    """Artifact key → artifact, for the artifacts a flow run created.

    With ``scope`` (``<deployment>-<input slug>``, as ``tasks.artifact_key`` ends keys), every key
    must end with ``-<scope>`` and is returned without it (``batch-classify-report``)."""
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

    found = {a.key: a for a in asyncio.run(read())}
    if scope is None:
        return found
    assert all(key.endswith(f"-{scope}") for key in found), (sorted(found), scope)
    return {key.removesuffix(f"-{scope}"): a for key, a in found.items()}


def events_named(name: str) -> list:
    """The events called ``name`` the server holds (newest first, at most 50)."""
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    async def read():
        async with get_client() as client:
            page = await client.read_events(filter=EventFilter(event=EventNameFilter(name=[name])), limit=50)
            return list(page.events)

    return asyncio.run(read())


def flow_run_of(flow_run_id):
    """The flow run as the API has it now (name, tags, state)."""
    from prefect import get_client

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(flow_run_id)

    return asyncio.run(read())
