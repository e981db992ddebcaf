"""Chat: retrieval, a token-budgeted prompt with numbered citations, and routed generation.

Modules: `models` (API shapes), `providers` (extractive, OpenAI-compatible, Bedrock), `router`
(mode, health, circuit breakers, fallbacks), `breaker`, `budget`, `tokens`, `prompts`, `extractive`,
`conversation` (follow-up rewriting), `citations`, `secrets` (API keys from SSM / Secrets Manager),
`service` (one request end to end). Heavy clients (httpx, boto3, tiktoken) load on first use.
"""
