"""Prefect's own client against the API the project runs: its filter endpoints answer.

Prefect's client sends JSON null for every filter it leaves unset; fastapi 0.151 and later
validate those nulls instead of taking the defaults Prefect's server declares, so every listing
(`prefect flow-run ls`, `deployment ls`, `artifact ls`, the UI's pages) failed with 422.
"""

import asyncio

import pytest
from prefect import get_client


@pytest.mark.parametrize(
    "listing",
    [
        "read_flows",
        "read_flow_runs",
        "read_task_runs",
        "read_deployments",
        "read_work_pools",
        "read_artifacts",
    ],
)
def test_prefects_client_can_list_what_the_api_holds(prefect_api, listing):
    async def call():
        async with get_client() as client:
            return await getattr(client, listing)()

    assert isinstance(asyncio.run(call()), list)
