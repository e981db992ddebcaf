"""Stream function: the API app served by uvicorn behind the Lambda Web Adapter (response streaming).

The image's `stream` target runs `python -m functions.stream.app`: uvicorn on AWS_LWA_PORT, and the
adapter (an extension) turns Function URL invocations into HTTP requests, relaying the body as it is
written. `handler` is the buffered fallback of the same app (Mangum), for `sam local invoke` and any
invocation without the adapter.
"""

import os
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from stratus.api.app import app
from stratus.observability import logger

asgi_handler = Mangum(app, lifespan="off")


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Answer one Function URL event in one piece (no adapter: no streaming)."""
    response: dict[str, Any] = asgi_handler(event, context)  # type: ignore[arg-type]
    return response


def serve() -> None:
    """Run the app for the Lambda Web Adapter (loopback only; the adapter is the only client)."""
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("AWS_LWA_PORT", "8080")), log_level="warning")


if __name__ == "__main__":
    serve()
