"""The simulator from async tests, on asyncio and trio: httpx as the client, async waits."""

from __future__ import annotations

import anyio
import httpx
import pytest

from sota_client.sim import CoreSimulator

from ._client import DEVICE, MY
from .conftest import PAYLOAD


@pytest.mark.anyio
async def test_download_and_report_then_wait(sim: CoreSimulator) -> None:
    request_id = sim.queue_update(DEVICE, "nano", "2.2.6")
    async with httpx.AsyncClient(base_url=sim.url, trust_env=False) as client:

        async def device() -> None:
            listed = (await client.get(f"{MY}/updates")).json()
            assert [e["requestId"] for e in listed] == [request_id]
            body = (await client.get(f"{MY}/updates/{request_id}/download")).content
            assert body == PAYLOAD
            results = [{"id": request_id, "result_code": 0, "result_text": "installed"}]
            reply = await client.post(f"{MY}/updates/{request_id}", json=results)
            assert reply.status_code == 204

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(device)
                status = await sim.wait_for_async(
                    lambda: sim.status(DEVICE, request_id) == "Finished"
                )
    assert status is True


@pytest.mark.anyio
async def test_cancelled_wait_ends_its_thread(sim: CoreSimulator) -> None:
    with anyio.move_on_after(0.01) as scope:
        await sim.wait_for_async(lambda: False)
    assert scope.cancelled_caught
    # The abandoned wait was woken and ended; waiting again works as before.
    with anyio.fail_after(10):
        assert await sim.wait_for_async(lambda: "ok") == "ok"
