"""The fake OpenAI-compatible upstream used by tests, the bench and ``kraken serve --demo``."""

from kraken.mock.openai_mock import MockOpenAI, MockRequest, MockResponse, main

__all__ = ["MockOpenAI", "MockRequest", "MockResponse", "main"]
