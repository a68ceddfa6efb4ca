"""Failed and crashed retraining runs (a rejected candidate among them) are announced through
the Prefect notification block NNSERVE_NOTIFICATION_BLOCK names, as `<block type>/<block name>`:
`custom-webhook/ml-alerts`, `slack-webhook/ml-team`, any block Prefect can notify through."""

from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.client.schemas.objects import FlowRun
from prefect.flows import Flow
from prefect.logging.loggers import flow_run_logger
from prefect.states import State
from prefect.utilities.urls import url_for

from service.settings import get_settings


def notify_failure(flow: Flow, flow_run: FlowRun, state: State) -> None:
    """A flow-run state hook: says what ended how, and why, where the setting names a block."""
    block_name = get_settings().notification_block
    if not block_name:
        return
    link = url_for(flow_run)
    body = "\n".join(
        line
        for line in (
            state.message or state.name,
            f"flow run {flow_run.name} ({flow_run.id}) of {flow.name}: {state.name}",
            link,
        )
        if line
    )
    try:
        block = Block.load(block_name)
        if not isinstance(block, NotificationBlock):
            raise TypeError(f"it is a {type(block).__name__}, not a notification block")
        with block.raise_on_failure():
            block.notify(body, subject=f"nnserve: {flow_run.name} {state.name}")
    except Exception as error:  # the run's own failure is what it must report
        flow_run_logger(flow_run, flow).warning(
            "could not notify through the block %s (NNSERVE_NOTIFICATION_BLOCK): %s",
            block_name,
            error,
        )
