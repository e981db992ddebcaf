"""Index function: the single writer of the LanceDB chunk tables."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from stratus.observability import logger, metrics, tracer
from stratus.pipeline.index import run_index_batch


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Index the whole batch at once; failed records are reported for redelivery."""
    return run_index_batch(event)
