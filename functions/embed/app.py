"""Embed function: staged chunk batches in, staged vectors out."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from stratus.observability import logger, metrics, tracer
from stratus.pipeline.embed import run_embed_batch


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Embed the whole batch at once (one encoder call); failed records are reported for redelivery."""
    return run_embed_batch(event)
