"""A deployed stack, found by name: its CloudFormation outputs as the CLI's settings."""

from __future__ import annotations

from typing import Any

from stratus.errors import StratusError

# template.yaml output -> the setting (environment variable) it becomes
OUTPUT_SETTINGS = {
    "BucketName": "STRATUS_BUCKET",
    "DocumentsTableName": "STRATUS_DOCUMENTS_TABLE",
    "ApiKeysTableName": "STRATUS_API_KEYS_TABLE",
    "FeedbackTableName": "STRATUS_FEEDBACK_TABLE",
    "ConversationsTableName": "STRATUS_CONVERSATIONS_TABLE",
    "AuditTableName": "STRATUS_AUDIT_TABLE",
    "ApiUsagePlanId": "STRATUS_API_USAGE_PLAN_ID",
    "FetchQueueUrl": "STRATUS_FETCH_QUEUE_URL",
    "EmbedQueueUrl": "STRATUS_EMBED_QUEUE_URL",
    "IndexQueueUrl": "STRATUS_INDEX_QUEUE_URL",
}
REQUIRED_OUTPUTS = ("ApiUrl", "BucketName", "DocumentsTableName")


class StackNotFoundError(StratusError):
    """The stack does not exist, or lacks the outputs of template.yaml."""


class StackOutputs:
    """Reads a stack's outputs through a CloudFormation client."""

    def __init__(self, cloudformation_client: Any) -> None:
        self._client = cloudformation_client

    def get(self, stack_name: str) -> dict[str, str]:
        """Output key -> value of the stack; StackNotFoundError if it is missing or not a Stratus stack."""
        from botocore.exceptions import ClientError

        try:
            stacks = self._client.describe_stacks(StackName=stack_name)["Stacks"]
        except ClientError as error:
            raise StackNotFoundError(f"stack {stack_name!r}: {error}") from error
        if not stacks:
            raise StackNotFoundError(f"stack {stack_name!r} does not exist")
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        missing = [key for key in REQUIRED_OUTPUTS if key not in outputs]
        if missing:
            status = stacks[0].get("StackStatus", "?")
            raise StackNotFoundError(
                f"stack {stack_name!r} ({status}) has no output {', '.join(missing)}: is it a Stratus stack?"
            )
        return outputs


def stack_environment(outputs: dict[str, str]) -> dict[str, str]:
    """The STRATUS_* variables that point this process at the stack's resources."""
    return {setting: outputs[key] for key, setting in OUTPUT_SETTINGS.items() if key in outputs}
