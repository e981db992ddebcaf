"""Fetch function: S3 notifications (through SQS) in, staged chunk batches out."""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from stratus.observability import logger, metrics, tracer
from stratus.pipeline.fetch import run_fetch_message
from stratus.pipeline.sqs import receive_count

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    """One S3 notification."""
    run_fetch_message(record.body, record.message_id, receive_count(record.raw_event))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    """Process a batch; failed records are reported for redelivery."""
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
