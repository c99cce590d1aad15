"""The store client as a CDR sink of the sensor app (`vmproto.sensor.app.CdrSink`): each finished CDR becomes its
id_main 10 statement unit (`vmproto.sensor.cdr.sql.store_sql`) on the store channel."""

from __future__ import annotations

import trio

from vmproto.sensor.cdr.model import CdrRecord
from vmproto.sensor.cdr.sql import store_sql
from vmproto.sensor.classic import SinkSummary
from vmproto.sensor.client.store import StoreClient

__all__ = ["StoreCdrSink", "ID_MAIN_CDR"]

ID_MAIN_CDR = 10


class StoreCdrSink:
    """`summary.committed` counts CDRs whose message the central acknowledged (spec §8.10)."""

    def __init__(self, store: StoreClient) -> None:
        self.store = store
        self.summary = SinkSummary()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs the store client (journal replay first); started once the journal is usable."""
        await self.store.run(task_status=task_status)

    async def submit(self, cdr: CdrRecord) -> None:
        """Queue the CDR's SQL; waits while the store queue is full (back-pressure)."""
        await self.store.submit(ID_MAIN_CDR, store_sql(cdr))
        self.summary.submitted += 1

    async def aclose(self) -> None:
        """Wait until every submitted CDR was acknowledged, then close the journal."""
        await self.store.wait_idle()
        self.summary.committed = self.summary.submitted
        await self.store.close()
