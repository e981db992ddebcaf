"""API function: the FastAPI app behind API Gateway, through Mangum."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from stratus.api.app import app
from stratus.observability import logger, metrics, tracer

asgi_handler = Mangum(app, lifespan="off")


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Translate the API Gateway event to ASGI and back."""
    response: dict[str, Any] = asgi_handler(event, context)  # type: ignore[arg-type]
    return response
