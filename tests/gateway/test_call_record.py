"""Call.to_record builds the record positionally: every field lands under its own name."""
from kraken.gateway.call import Call
from kraken.providers.usage import AnthropicUsage, Usage
from kraken.store.record import FIELD_NAMES, RequestRecord


def _call() -> Call:
    call = Call(1_000_000_000, "chat")
    call.customer_id, call.key_id, call.plan = "cus_1", "key_1", "pro"
    call.model_requested, call.model_dispatched = "gpt-x", "gpt-x-2024"
    call.provider, call.task_type, call.status = "openai", "code_gen", 207
    call.usage = Usage(11, 22, 3, 4)
    call.ttfb_ns, call.end_ns = 1_250_000_000, 1_500_000_000
    call.cost_usd, call.fee_usd = 0.25, 0.01
    call.fallback_used, call.byok, call.error_type = True, True, "upstream_5xx"
    return call


def test_each_field_under_its_name():
    call = _call()
    rec = call.to_record()
    assert type(rec) is RequestRecord and len(rec) == len(FIELD_NAMES)
    assert rec._asdict() == {
        "ts": call.ts, "request_id": call.request_id, "customer_id": "cus_1",
        "model_requested": "gpt-x", "model_dispatched": "gpt-x-2024", "provider": "openai",
        "prompt_tokens": 11, "completion_tokens": 22, "cached_tokens": 3, "reasoning_tokens": 4,
        "latency_ms": 500.0, "ttfb_ms": 250.0, "task_type": "code_gen", "cost_usd": 0.25,
        "kraken_fee_usd": 0.01, "fallback_used": True, "error_type": "upstream_5xx",
        "status": 207, "byok": True, "key_id": "key_1",
    }


def test_no_usage_no_ttfb_no_provider():
    call = Call(1_000_000_000, "chat")
    call.end_ns = 1_002_000_000
    rec = call.to_record()
    assert (rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens,
            rec.reasoning_tokens) == (None, None, None, None)
    assert rec.ttfb_ms is None and rec.provider is None and rec.latency_ms == 2.0
    assert rec.byok is False and rec.key_id is None and rec.status == 0


def test_anthropic_usage_normalised():
    call = _call()
    call.usage = AnthropicUsage(input_tokens=5, output_tokens=7, cache_read_input_tokens=2)
    rec = call.to_record()
    usage = call.usage
    assert (rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens) == (
        usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)


def test_latency_and_ttfb_are_milliseconds_to_the_microsecond():
    """Rounded from the integer nanoseconds, a tie up: 1.2345 ms and 0.0005 ms go up."""
    call = Call(1_000_000_000, "chat")
    call.ttfb_ns, call.end_ns = 1_000_000_500, 1_001_234_499
    rec = call.to_record()
    assert (rec.ttfb_ms, rec.latency_ms) == (0.001, 1.234)
    call = Call(1_000_000_000, "chat")
    call.ttfb_ns, call.end_ns = 1_000_000_499, 1_001_234_500
    rec = call.to_record()
    assert (rec.ttfb_ms, rec.latency_ms) == (0.0, 1.235)
