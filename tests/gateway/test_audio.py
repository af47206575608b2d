"""The audio endpoints through Kraken: the real openai SDK, the mock in OpenAI's wire format.
Uploads are relayed as they arrive (the 413 cut proves no whole-body buffering), answers byte
for byte, one record per call with the usage the provider reported."""
from __future__ import annotations

import asyncio
import io

import pytest
from harness import (
    TEST_KEY,
    auth_headers,
    http,
    kraken_mapping,
    openai_client,
    running_kraken,
    running_mock,
    wait_rows,
)

from kraken.gateway.endpoints.audio import MAX_AUDIO_BYTES
from kraken.mock.openai_audio import fake_audio

pytestmark = pytest.mark.anyio

AUDIO = bytes(range(256)) * 200  # 51,200 bytes: 4 seconds at the mock's rate


def doc(tmp_path, mock):
    d = kraken_mapping(tmp_path, mock.port)
    d["providers"]["mockai"].update({"kind": "openai",  # OpenAI's prices
                                     "models": ["whisper-1", "gpt-4o-transcribe", "tts-1"]})
    return d


async def test_transcription_json_relayed_and_duration_recorded(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        raw = await openai_client(k).audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=("a.wav", AUDIO, "audio/wav"))
        assert raw.parse().text == "The kraken rises from the deep."
        assert raw.content == mock.responses[-1].body
        seen = mock.requests[-1]
        assert seen.path == "/v1/audio/transcriptions"
        assert AUDIO in seen.body, "the upload reached the provider unchanged"
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["request_id"] == raw.headers["x-request-id"]
        assert row["status"] == 200 and row["model_dispatched"] == "whisper-1"
        assert row["prompt_tokens"] == 4  # seconds of audio
        assert row["cost_usd"] == pytest.approx(4 * 0.006 / 60)


async def test_transcription_text_format_and_tokens_model(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        client = openai_client(k)
        text = await client.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=("a.wav", AUDIO, "audio/wav"), response_format="text")
        assert text.strip() == "The kraken rises from the deep."
        raw = await client.audio.transcriptions.with_raw_response.create(
            model="gpt-4o-transcribe", file=("a.wav", io.BytesIO(AUDIO), "audio/wav"))
        assert raw.content == mock.responses[-1].body
        rows = await wait_rows(k.db_path, 2)
        by_id = {r["request_id"]: r for r in rows}
        assert by_id[raw.headers["x-request-id"]]["prompt_tokens"] == 18
        assert by_id[raw.headers["x-request-id"]]["completion_tokens"] == 9
        other = next(r for r in rows if r["request_id"] != raw.headers["x-request-id"])
        assert other["status"] == 200 and other["prompt_tokens"] is None


async def test_translation(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        raw = await openai_client(k).audio.translations.with_raw_response.create(
            model="whisper-1", file=("a.mp3", AUDIO, "audio/mpeg"))
        assert raw.parse().text == "The kraken rises from the deep."
        assert raw.content == mock.responses[-1].body
        assert mock.requests[-1].path == "/v1/audio/translations"
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["status"] == 200


async def test_speech_streamed_to_a_file_identical_and_metered_by_characters(tmp_path):
    text = "Hello from the deep sea."
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        out = tmp_path / "speech.mp3"
        async with openai_client(k).audio.speech.with_streaming_response.create(
                model="tts-1", voice="alloy", input=text) as response:
            assert response.headers["content-type"] == "audio/mpeg"
            await response.stream_to_file(out)
        assert out.read_bytes() == fake_audio(text, 48_000) == mock.responses[-1].body
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["prompt_tokens"] == len(text)
        assert row["cost_usd"] == pytest.approx(len(text) * 15 / 1e6)


async def test_missing_model_is_400_naming_model(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        body = (b"--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                b"Content-Type: audio/wav\r\n\r\n" + AUDIO + b"\r\n--b0--\r\n")
        reply = await http(k.port, "POST", "/v1/audio/transcriptions", body,
                           {**auth_headers(), "Content-Type": "multipart/form-data; boundary=b0"})
        assert reply.status == 400
        error = reply.json()["error"]
        assert "'model'" in error["message"] and error["type"] == "invalid_request_error"
        assert not mock.requests


async def test_body_over_the_limit_is_413_and_not_relayed_past_it(tmp_path):
    """A 40 MB upload sent chunked (no length to refuse it early): Kraken counts as it relays,
    answers 413 in OpenAI's format once past 25 MB, and the provider saw no more than that."""
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        head = (b"--b1\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
                b"--b1\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                b"Content-Type: audio/wav\r\n\r\n")

        reader, writer = await asyncio.open_connection("127.0.0.1", k.port)
        writer.write(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: kraken\r\n"
                     b"Authorization: Bearer " + TEST_KEY.encode() + b"\r\n"
                     b"Content-Type: multipart/form-data; boundary=b1\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        piece = b"\0" * (1 << 20)
        try:
            for data in [head] + [piece] * 40 + [b"\r\n--b1--\r\n"]:
                writer.write(b"%x\r\n%b\r\n" % (len(data), data))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            pass  # Kraken stopped reading after its answer
        answer = await reader.read()
        writer.close()
        head_part, _, body = answer.partition(b"\r\n\r\n")
        assert head_part.startswith(b"HTTP/1.1 413 ")
        assert b'"type":"invalid_request_error"' in body
        assert mock.bytes_received <= MAX_AUDIO_BYTES + 64 * 1024
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["status"] == 413


async def test_declared_length_over_the_limit_is_413_before_the_body(tmp_path):
    """The Content-Length says too much: 413 before the body is read (nothing relayed)."""
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        reader, writer = await asyncio.open_connection("127.0.0.1", k.port)
        writer.write(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: kraken\r\n"
                     b"Authorization: Bearer " + TEST_KEY.encode() + b"\r\n"
                     b"Content-Type: multipart/form-data; boundary=b2\r\n"
                     b"Content-Length: %d\r\n\r\n--b2\r\n" % (MAX_AUDIO_BYTES + 1))
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert mock.bytes_received == 0


async def _aiter(it):
    for item in it:
        yield item


def _form(model: bytes, audio: bytes, boundary: bytes = b"b3") -> bytes:
    return (b"--%b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n%b\r\n"
            b"--%b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            b"Content-Type: audio/wav\r\n\r\n%b\r\n--%b--\r\n"
            % (boundary, model, boundary, audio, boundary))


async def test_upload_over_http2_streamed_and_relayed(tmp_path):
    from h2client import h2c

    audio = b"RIFF" + bytes(range(256)) * 60
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        async with h2c(k.port) as client:
            reply = await client.request(
                "POST", "/v1/audio/transcriptions", _form(b"whisper-1", audio),
                {"authorization": f"Bearer {TEST_KEY}",
                 "content-type": "multipart/form-data; boundary=b3"})
        assert reply.status == 200 and reply.body == mock.responses[-1].body
        assert mock.requests[-1].body == _form(b"whisper-1", audio), "relayed byte for byte"
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["status"] == 200 and row["prompt_tokens"] == 1


async def test_no_audio_or_transcript_bytes_in_db_journal_or_logs(tmp_path, capfd):
    marker = b"KRAKEN-AUDIO-MARKER-7f3a" * 100
    text = "the secret words of speech 91c2"
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        client = openai_client(k)
        raw = await client.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=("secret-name.wav", marker, "audio/wav"))
        assert raw.status_code == 200
        async with client.audio.speech.with_streaming_response.create(
                model="tts-1", voice="alloy", input=text) as response:
            await response.read()
        await wait_rows(k.db_path, 2)
    out, err = capfd.readouterr()
    transcript = b"The kraken rises from the deep."
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files, "the database and journal exist"
    for blob in [p.read_bytes() for p in files] + [out.encode(), err.encode()]:
        for secret in (b"KRAKEN-AUDIO-MARKER", b"secret-name", text.encode(), transcript):
            assert secret not in blob


async def test_limit_from_config(tmp_path):
    """``[server] max_audio_bytes``: a 3 MB upload past a 1 MB limit is a 413, and the
    provider saw no more than the limit."""
    async with running_mock() as mock:
        d = doc(tmp_path, mock)
        d["server"]["max_audio_bytes"] = 1 << 20
        async with running_kraken(d) as k:
            with pytest.raises(Exception) as err:
                await openai_client(k).audio.transcriptions.create(
                    model="whisper-1", file=("a.wav", b"\1" * (3 << 20), "audio/wav"))
            assert getattr(err.value, "status_code", None) == 413
            assert mock.bytes_received <= (1 << 20) + 64 * 1024
            small = await openai_client(k).audio.transcriptions.create(
                model="whisper-1", file=("a.wav", AUDIO, "audio/wav"))
            assert small.text


async def test_large_upload_relayed_whole_and_unchanged(tmp_path):
    """20 MB (with a Content-Length, as the SDK sends it): pumped in the client's chunks as the
    provider takes them; the provider gets every byte, in order."""
    audio = bytes(range(251)) * (20 * 4178)
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        result = await openai_client(k).audio.transcriptions.create(
            model="whisper-1", file=("big.wav", audio, "audio/wav"))
        assert result.text
        seen = mock.requests[-1]
        assert int(seen.header(b"content-length")) == len(seen.body)
        assert seen.body.count(audio) == 1
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["prompt_tokens"] == -(-len(audio) // 16000)
