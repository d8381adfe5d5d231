"""Images, Llama 3.2 Vision predict, OpenAI chat, many prompts: against the emulator."""

from __future__ import annotations

import base64
import datetime
import http.server
import io
import json
import math
import threading
import urllib.request

import pytest
from google.auth import credentials as google_credentials
from PIL import Image

import nbhelpers
from nbhelpers import batch, images, openai_chat
from nbhelpers.errors import ConfigError
from tests.conftest import FAKE_TOKEN


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def image_server():
    """Serves /cat.png only to requests that send a User-Agent other than python's default."""
    body = _png(1200, 900)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            agent = self.headers.get("User-Agent", "")
            if not agent or agent.startswith("Python-urllib"):
                self.send_response(403)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cat.png"
    server.shutdown()
    server.server_close()


def _deploy(session, env, model, *, dedicated_endpoint=True):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    plan = nbhelpers.plan_deployment(model, ask_for_token=False,
                                     dedicated_endpoint=dedicated_endpoint)
    return nbhelpers.deploy(session, plan)


# --- images ---------------------------------------------------------------------------------
def test_load_image_from_every_kind_of_source(tmp_path, image_server):
    path = tmp_path / "a.png"
    path.write_bytes(_png(30, 20))
    data_url = "data:image/png;base64," + base64.b64encode(_png(31, 21)).decode()
    assert images.load_image(path).size == (30, 20)
    assert images.load_image(str(path)).size == (30, 20)
    assert images.load_image(_png(5, 6)).size == (5, 6)
    assert images.load_image(data_url).size == (31, 21)
    assert images.load_image(Image.new("RGB", (7, 8))).size == (7, 8)
    assert images.load_image(image_server).size == (1200, 900)  # sends a User-Agent
    with pytest.raises(urllib.error.HTTPError):  # what a client without one gets
        urllib.request.urlopen(image_server)
    with pytest.raises(ConfigError, match="does not exist"):
        images.load_image(tmp_path / "missing.png")
    with pytest.raises(ConfigError, match="not an image"):
        images.load_image(b"not an image")


def test_fit_to_tiles_downscales_only():
    big = images.fit_to_tiles(Image.new("RGB", (4000, 3000)))
    assert math.ceil(big.size[0] / 560) * math.ceil(big.size[1] / 560) <= 4
    assert big.size[0] / big.size[1] == pytest.approx(4 / 3, rel=0.01)
    assert images.fit_to_tiles(Image.new("RGB", (300, 200))).size == (300, 200)
    one = images.fit_to_tiles(Image.new("RGB", (2000, 1000)), max_tiles=1)
    assert max(one.size) <= 560


def test_data_url_and_payload_limit():
    url = images.to_data_url(images.sample_image(), image_format="PNG")
    assert url.startswith("data:image/png;base64,")
    with pytest.raises(ConfigError, match="over the 1,572,864-byte .* quality"):
        images.check_payload({"instances": [{"prompt": "x" * 1_600_000}]})
    with pytest.raises(ConfigError, match="unknown image format 'GIF'"):
        images.encode(images.sample_image(), image_format="GIF")


# --- vision predict -------------------------------------------------------------------------
def test_predict_image_names_the_image_size(session, env):
    deployment = _deploy(session, env, "Llama-3.2-11B-Vision-Instruct")
    reply = nbhelpers.predict_image(deployment, images.sample_image(1120, 840), "What is this?")
    assert "<|image|>What is this?" in reply.prompt
    assert "an image of 1120x840 pixels" in reply.text
    oversized = images.sample_image(5000, 400)  # 9 tiles wide: fitted to 4 before sending
    assert "an image of" in nbhelpers.predict_image(deployment, oversized, "And this?").text
    text_only = _deploy(session, env, "Llama-3.2-1B-Instruct")
    with pytest.raises(ConfigError, match="text model"):
        nbhelpers.predict_image(text_only, images.sample_image(), "?")


# --- chat -----------------------------------------------------------------------------------
def test_chat_text_turns_images_and_streaming(session, env, tmp_path, image_server, capsys):
    deployment = _deploy(session, env, "Llama-3.2-11B-Vision-Instruct")
    reply = nbhelpers.chat(deployment, "Hello", system="Answer in French.", max_tokens=40,
                           history=[{"role": "user", "content": "Hi"},
                                    {"role": "assistant", "content": "Salut"}])
    assert "4 messages (system,user,assistant,user)" in reply
    path = tmp_path / "photo.png"
    path.write_bytes(_png(640, 480))
    fitted = "{}x{}".format(*images.fit_to_tiles(Image.new("RGB", (1200, 900))).size)
    assert fitted != "1200x900"  # 6 tiles: shrunk to 4 before it is sent
    for source, size in ((path, "640x480"), (image_server, fitted),
                         (images.to_data_url(_png(100, 50)), "100x50")):
        reply = nbhelpers.chat(deployment, "Describe it.", images_in=[source], max_tokens=60)
        assert f"an image of {size} pixels" in reply, reply
    streamed = nbhelpers.chat(deployment, "Stream please", max_tokens=12, stream=True)
    printed = capsys.readouterr().out
    assert len(streamed.split()) == 12 and streamed in printed


def test_chat_refuses_before_the_call(session, env):
    vision = _deploy(session, env, "Llama-3.2-11B-Vision-Instruct")
    with pytest.raises(ConfigError, match="2 images .* at most 1"):
        nbhelpers.chat(vision, "Compare", images_in=[_png(10, 10), _png(20, 20)])
    base = _deploy(session, env, "Llama-3.2-1B")
    with pytest.raises(ConfigError, match="base model without a chat template.*"
                                          "Llama-3.2-1B-Instruct"):
        nbhelpers.chat(base, "Hi")


def test_server_answers_like_vllm_when_not_checked_first(session, env):
    import openai

    vision = _deploy(session, env, "Llama-3.2-11B-Vision-Instruct")
    two = openai_chat.build_messages("Compare", images_in=[_png(10, 10), _png(20, 20)])
    with pytest.raises(openai.BadRequestError, match=r"At most 1 image\(s\)"):
        nbhelpers.chat_client(vision).chat.completions.create(model="", messages=two)
    base = _deploy(session, env, "Llama-3.2-1B")
    with pytest.raises(openai.BadRequestError, match="chat template"):
        nbhelpers.chat_client(base).chat.completions.create(
            model="", messages=[{"role": "user", "content": "Hi"}])


class ExpiringCredentials(google_credentials.Credentials):
    """Tokens that expire: the first one is already stale when the session starts."""

    def __init__(self):
        super().__init__()
        self.token, self.refreshed = "token-0", 0
        self.expiry = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(
            minutes=1)

    def refresh(self, request):
        self.refreshed += 1
        self.token = f"token-{self.refreshed}"
        self.expiry = (datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
                       + datetime.timedelta(hours=1))


def _post(url: str, body: dict) -> None:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    urllib.request.urlopen(request).close()


def test_expired_token_is_refreshed_without_the_user_noticing(session, env, emulator):
    deployment = _deploy(session, env, "Llama-3.1-8B-Instruct")
    _post(f"{emulator.url}/emulator/expired-tokens", {"token": "token-0"})
    credentials = ExpiringCredentials()
    api = nbhelpers.chat_client(deployment, credentials=credentials)
    assert "rehearsal" in nbhelpers.chat(deployment, "Hi", openai_client=api)
    assert credentials.refreshed == 1 and credentials.token == "token-1"
    nbhelpers.chat(deployment, "Again", openai_client=api)
    assert credentials.refreshed == 1  # still valid: no second refresh
    import openai

    stale = openai.OpenAI(base_url=openai_chat.base_url(deployment.endpoint()),
                          api_key="token-0", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        nbhelpers.chat(deployment, "Hi", openai_client=stale)


def test_dedicated_endpoint_chat_over_https(session, env):
    env.setenv("HF_TOKEN", FAKE_TOKEN)
    plan = nbhelpers.plan_deployment("Llama-3.1-8B-Instruct", dedicated_endpoint=True,
                                     ask_for_token=False)
    deployment = nbhelpers.deploy(session, plan)
    assert openai_chat.base_url(deployment.endpoint()).startswith("https://127.0.0.1:")
    assert "rehearsal" in nbhelpers.chat(deployment, "Hi over TLS", max_tokens=30)


# --- many prompts ---------------------------------------------------------------------------
def test_many_prompts_keep_order_and_retry_503(session, env, emulator):
    deployment = _deploy(session, env, "Llama-3.1-8B-Instruct", dedicated_endpoint=False)
    _post(f"{emulator.url}/emulator/faults", {"status": 503, "count": 2})
    prompts = [f"prompt number {i}" for i in range(12)]
    report = nbhelpers.predict_many(deployment, prompts, concurrency=4, progress=False,
                                    max_tokens=40)
    assert all(r.ok for r in report.results), report.summary()
    assert report.retries == 2
    assert [r.prompt for r in report.results] == prompts
    chats = nbhelpers.chat_many(deployment, prompts[:5], concurrency=3, progress=False,
                                max_tokens=10)
    assert all(r.ok and len(r.output.split()) == 10 for r in chats.results)
    # A shared endpoint does not stream: time to first token is not measured (NaN), not faked;
    # the streamed case runs on a dedicated endpoint in test_serving_contract.py.
    assert all(math.isnan(r.ttft_s) for r in chats.results)
    assert "5/5 succeeded" in chats.summary()


def test_a_non_retryable_error_is_recorded_not_raised():
    def send(item):
        if item == "bad":
            raise ValueError("boom")
        return item.upper(), None

    report = batch.run_many(["a", "bad", "c"], send, concurrency=2, progress=False)
    assert report.outputs == ["A", "", "C"]
    assert report.results[1].error == "ValueError: boom" and report.results[1].attempts == 1


def test_replica_runs_at_most_max_num_seqs_sequences_per_service_time():
    from nbhelpers.emulator.replica import Replica

    replica = Replica(model_id="m", predict_route="/generate", health_route="/ping",
                      chat_template=True, max_num_seqs=2, service_seconds=10.0)
    replica.start()
    try:
        first, second, third = (replica.schedule(1) for _ in range(3))
        assert second - first < 1.0  # two slots: both start at once
        assert third >= first + 10.0  # the third waits for a free slot
        batch = replica.schedule(2)  # a two-instance request needs both slots together
        assert batch >= third + 10.0 - 1e-6 and batch >= second + 10.0
    finally:
        replica.stop()


def test_many_prompts_per_request_keep_order(session, env, emulator):
    deployment = _deploy(session, env, "Llama-3.1-8B-Instruct")
    _post(f"{emulator.url}/emulator/faults", {"status": 429, "count": 1})
    prompts = [f"question {i}" for i in range(10)]
    report = nbhelpers.predict_many(deployment, prompts, concurrency=2,
                                    instances_per_request=4, progress=False, max_tokens=30)
    assert [r.prompt for r in report.results] == prompts
    assert [r.index for r in report.results] == list(range(10))
    assert all(f"received {len(p)} characters" in r.output
               for p, r in zip(prompts, report.results, strict=True))
    assert report.retries == 1 and all(r.ok for r in report.results)


def test_oversize_image_is_refused_before_sending(session, env, emulator):
    import os

    # a shared endpoint: its 1.5 MB limit (a dedicated one's is 10 MB, test_serving_contract)
    deployment = _deploy(session, env, "Llama-3.2-11B-Vision-Instruct", dedicated_endpoint=False)
    noise = Image.frombytes("RGB", (2240, 560), os.urandom(2240 * 560 * 3))  # 4 tiles of noise
    calls_before = len(emulator.vertex.state.data["operations"])
    with pytest.raises(ConfigError, match="over the 1,572,864-byte .* lower quality"):
        nbhelpers.predict_image(deployment, noise, "What is this?", image_format="PNG")
    with pytest.raises(ConfigError, match="over the 1,572,864-byte"):
        nbhelpers.chat(deployment, "And this?", images_in=[noise], image_format="PNG")
    assert "an image of 2240x560" in nbhelpers.predict_image(deployment, noise, "As JPEG?").text
    assert len(emulator.vertex.state.data["operations"]) == calls_before
