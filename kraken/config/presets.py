"""Provider kinds: base URL, key variable and wire quirks per preset."""
from __future__ import annotations

from typing import Any

PROVIDER_PRESETS: dict[str, dict[str, Any]] = {
    # Quirks from the providers' API references: Mistral rejects ``stream_options`` (422
    # extra_forbidden) and always ends a stream with usage; DeepSeek reports cache reads as
    # ``prompt_cache_hit_tokens``; Responses API on OpenAI, Groq and xAI; all use Bearer auth.
    # Legacy completions, moderations, images, rerank: absent means false (README "Endpoints").
    "openai": {"base_url": "https://api.openai.com/v1", "key_env": "OPENAI_API_KEY",
               "stream_usage": "include_usage",
               "embeddings": True, "responses": True,
               "completions": True, "moderations": True, "images": True},
    "mistral": {"base_url": "https://api.mistral.ai/v1", "key_env": "MISTRAL_API_KEY",
                "stream_usage": "always",
                "embeddings": True, "responses": False},
    "groq": {"base_url": "https://api.groq.com/openai/v1", "key_env": "GROQ_API_KEY",
             "stream_usage": "include_usage",
             "embeddings": False, "responses": True},
    "deepseek": {"base_url": "https://api.deepseek.com/v1", "key_env": "DEEPSEEK_API_KEY",
                 "stream_usage": "include_usage",
                 "embeddings": False, "responses": False},
    "xai": {"base_url": "https://api.x.ai/v1", "key_env": "XAI_API_KEY",
            "stream_usage": "include_usage",
            "embeddings": False, "responses": True},
    "gemini": {
        "base_url": "https://generativelanguage.googleapis.com/v1beta/openai",
        "key_env": "GEMINI_API_KEY",
        "stream_usage": "include_usage",
        "embeddings": True, "responses": False,
    },
    "openai_compatible": {"base_url": "", "key_env": "", "stream_usage": "include_usage",
                          "embeddings": True, "responses": False, "completions": True},
    "mock": {"base_url": "", "key_env": "", "stream_usage": "include_usage",
             "embeddings": True, "responses": True, "completions": True, "moderations": True,
             "images": True, "rerank": True},
    # Anthropic's Messages API (kraken/providers/anthropic.py): x-api-key auth, usage always in
    # the stream; the family appends /messages to the base URL.
    "anthropic": {"base_url": "https://api.anthropic.com/v1", "key_env": "ANTHROPIC_API_KEY",
                  "stream_usage": "always", "embeddings": False, "responses": False},
    "mock_anthropic": {"base_url": "", "key_env": "", "stream_usage": "always",
                       "embeddings": False, "responses": False},
    # Amazon Bedrock (kraken/providers/bedrock.py): OpenAI chat translated to the Converse API,
    # signed with an AWS key pair (SigV4); region and credentials in kraken/config/bedrock.py.
    "bedrock": {"base_url": "", "key_env": "", "stream_usage": "always",
                "embeddings": False, "responses": False},
    # Azure OpenAI (kraken/providers/azure_openai.py): base_url is the resource endpoint, the
    # deployment goes in the path with ?api-version=, the key in an ``api-key`` header
    # (kraken/config/azure.py: api_version, auth, deployments).
    "azure_openai": {"base_url": "", "key_env": "AZURE_OPENAI_API_KEY",
                     "stream_usage": "include_usage", "embeddings": True, "responses": False,
                     "completions": True, "api_version": "2024-10-21"},
    # Vertex AI (kraken/providers/vertex.py): Gemini and Claude in a Google Cloud project; an
    # OAuth2 token from a service-account key, no API key (kraken/config/vertex.py).
    "vertex": {"base_url": "", "key_env": "", "stream_usage": "include_usage",
               "embeddings": False, "responses": False},
    # Hosted OpenAI-compatible APIs, Bearer auth. Cohere's Compatibility API and Perplexity
    # reject or ignore ``stream_options`` and end a stream with usage unasked; Perplexity's
    # ``citations``/``search_results`` pass through untouched. OpenRouter may get the optional
    # ``HTTP-Referer``/``X-Title`` app attribution headers (``referer``/``title``).
    # Cohere's rerank is its native /v2/rerank beside the Compatibility API (openai_compat.py).
    "cohere": {"base_url": "https://api.cohere.ai/compatibility/v1", "key_env": "CO_API_KEY",
               "stream_usage": "always", "embeddings": True, "responses": False,
               "rerank": True},
    "together": {"base_url": "https://api.together.xyz/v1", "key_env": "TOGETHER_API_KEY",
                 "stream_usage": "include_usage", "embeddings": True, "responses": False,
                 "completions": True, "rerank": True},
    "fireworks": {"base_url": "https://api.fireworks.ai/inference/v1",
                  "key_env": "FIREWORKS_API_KEY", "stream_usage": "include_usage",
                  "embeddings": True, "responses": False, "completions": True},
    "openrouter": {"base_url": "https://openrouter.ai/api/v1", "key_env": "OPENROUTER_API_KEY",
                   "stream_usage": "include_usage", "embeddings": False, "responses": False,
                   "completions": True},
    "perplexity": {"base_url": "https://api.perplexity.ai", "key_env": "PERPLEXITY_API_KEY",
                   "stream_usage": "always", "embeddings": False, "responses": False},
    # Self-hosted servers on their default ports: no key needed (one set in the file is sent as
    # Bearer), so none is warned about.
    "ollama": {"base_url": "http://localhost:11434/v1", "key_env": "",
               "stream_usage": "include_usage", "embeddings": True, "responses": False,
               "completions": True},
    "vllm": {"base_url": "http://localhost:8000/v1", "key_env": "",
             "stream_usage": "include_usage", "embeddings": True, "responses": False,
             "completions": True, "rerank": True},
}
MOCK_KINDS = ("mock", "mock_anthropic")
"""Kinds served by Kraken's built-in local mocks (demo and tests; no base URL)."""
STREAM_USAGE_MODES = ("include_usage", "always")

TASK_TYPES = ("code_gen", "chat", "summarization", "extraction", "translation", "reasoning",
              "embedding", "other")
"""Every task type a request is classified as (kraken/policy/classify.py), which
``[routing] prefer`` may name."""
