#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz harnesses (tests/fuzz/corpus/<harness>/), kept in the tree.

    tests/fuzz/make_seeds.py --fake-provider build-ci/bin/fake-provider

Sources: the golden vectors (schemas/golden/golden.json) for the protocol; real provider answers
in all five wire formats, streamed and whole, successes, scripted errors and stream faults, as
the fake provider sends them (started here on an ephemeral port) for the adapters, the stream
parsers and the JSON reader; the README's worker config and test-shaped YAML for the config
loader; OpenAI Batch API lines like the CLI tests' for the batch line parser; OpenAI and Anthropic
bodies like the formats tests' for the gateway's request translation. Each input is
prefixed with the selector bytes its harness reads (see the harness's header comment).

Rerun it when a format changes (answers carry times and ids, so the files change). Seeds added by hand
(crash-* and regress-* regression inputs) are left alone: only files named seed-* are replaced.
"""

import argparse
import hashlib
import json
import os
import pathlib
import re
import subprocess
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"

# fuzz_protocol.cpp: byte 0 indexes kChecks.
PROTOCOL_TYPES = [
    "Request", "Response", "Error", "Submit", "Accepted", "Rejected", "Cancel", "JobHeader",
    "JobEnd", "Chunk", "ChunkHeader", "StreamReset", "ResetHeader", "Ready", "Credit",
    "Heartbeat", "Disconnect", "StatusReply", "ToolCall", "Message", "Tool", "Target", "Usage",
    "Attempt", "ToolCallDelta", "ProviderCounters", "WorkerStatus",
]
FRAMES_CHOICE = len(PROTOCOL_TYPES)

# fuzz_adapters.cpp: kTypes and kStatuses.
ADAPTER_TYPES = ["openai", "openai-compatible", "anthropic", "ollama", "dashscope"]
STATUS_INDEX = {200: 0, 400: 8, 401: 9, 404: 10, 408: 11, 413: 12, 429: 13, 500: 14, 529: 15}


class Corpus:
    def __init__(self, name):
        self.dir = CORPUS / name
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("seed-*"):
            old.unlink()
        self.seen = set()

    def add(self, label, data):
        digest = hashlib.sha1(data).hexdigest()
        if digest in self.seen:
            return
        self.seen.add(digest)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:60]
        (self.dir / f"seed-{safe}-{digest[:8]}").write_bytes(data)


def protocol_seeds():
    corpus = Corpus("protocol")
    golden = json.loads((ROOT / "schemas" / "golden" / "golden.json").read_text())
    tag = b"LLMD1"
    for vector in golden["vectors"]:
        data = bytes.fromhex(vector["hex"])
        name = vector["name"]
        if vector["type"] in PROTOCOL_TYPES:
            corpus.add(name, bytes([PROTOCOL_TYPES.index(vector["type"])]) + data)
        # The same bytes as a frame sequence: tag, command, header (, payload); 0xFE splits.
        command = vector.get("command", "").encode()
        if vector.get("frame") == "header" and command:
            frames = [tag, command, data]
            if command in (b"submit", b"job", b"result", b"chunk"):
                frames.append(b"\x80")
            corpus.add("frames-" + name, bytes([FRAMES_CHOICE]) + b"\xfe".join(frames))


def http(url, body=None, headers=None, method="POST"):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def provider_requests(base, stream, variant, model):
    """(adapter type, url, body, headers) for each wire format."""
    user = {"role": "user", "content": "hello tool" if variant == "tools" else "hello"}
    openai_tools = [{"type": "function", "function": {
        "name": "lookup", "description": "Look it up",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
    auth = {"authorization": "Bearer sk-test"}
    out = []
    for kind, prefix in (("openai", "/v1"), ("openai-compatible", "/compatible-mode/v1")):
        body = {"model": model, "messages": [user], "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if variant == "tools":
            body["tools"] = openai_tools
        if variant == "thinking" and kind == "openai-compatible":
            body["enable_thinking"] = True
        out.append((kind, base + prefix + "/chat/completions", body, auth))
    body = {"model": model, "max_tokens": 2000, "messages": [user], "stream": stream}
    if variant == "tools":
        body["tools"] = [{"name": "lookup", "description": "Look it up",
                          "input_schema": {"type": "object",
                                           "properties": {"q": {"type": "string"}}}}]
    if variant == "thinking":
        body["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    out.append(("anthropic", base + "/v1/messages", body,
                {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}))
    body = {"model": model, "messages": [user], "stream": stream}
    if variant == "tools":
        body["tools"] = openai_tools
    if variant == "thinking":
        body["think"] = True
    out.append(("ollama", base + "/api/chat", body, {}))
    body = {"model": model, "input": {"messages": [user]},
            "parameters": {"result_format": "message", "incremental_output": stream}}
    if variant == "tools":
        body["parameters"]["tools"] = openai_tools
    if variant == "thinking" and stream:
        body["parameters"]["enable_thinking"] = True
    headers = dict(auth)
    if stream:
        headers["X-DashScope-SSE"] = "enable"
    out.append(("dashscope", base + "/api/v1/services/aigc/text-generation/generation", body,
                headers))
    return out


def json_texts(body):
    """Every JSON text in an answer: the whole body, or each SSE data field / NDJSON line."""
    texts = []
    for line in body.split(b"\n"):
        line = line.strip(b"\r")
        if line.startswith(b"data:"):
            line = line[5:].lstrip(b" ")
        if line.startswith(b"{") or line.startswith(b"["):
            texts.append(line)
    if body.lstrip().startswith(b"{"):
        texts.append(body.strip())
    return texts


def provider_seeds(fake_binary):
    adapters = Corpus("adapters")
    parsers = Corpus("stream_parsers")
    json_view = Corpus("json_view")
    process = subprocess.Popen([fake_binary, "--listen", "127.0.0.1:0", "--quiet", "--tokens",
                                "4"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        port = process.stdout.readline().decode().strip()
        base = f"http://127.0.0.1:{port}"
        variants = {
            "plain": "m~tokens=4",
            "tools": "m",
            "thinking": "m~tokens=3",
            "error-mid-stream": "m~tokens=3~error_mid_stream=1",
            "malformed": "m~tokens=3~malformed_at=2",
            "no-terminator": "m~tokens=2~no_terminator",
            "rate-limited": "m~status=429~retry_after=2",
            "server-error": "m~status=500",
            "overloaded": "m~status=529",
            "unauthorized": "m~status=401",
            "context-length": "m~context_length",
            "content-filter": "m~content_filter",
            "missing-model": "no-such-model",
        }
        for variant, model in variants.items():
            for stream in (True, False):
                for kind, url, body, headers in provider_requests(base, stream, variant, model):
                    status, reply_headers, reply = http(url, body, headers)
                    form = "stream" if stream else "whole"
                    label = f"{kind}-{variant}-{form}"
                    selector = ADAPTER_TYPES.index(kind) | (8 if stream else 0)
                    selector |= STATUS_INDEX.get(status, 14) << 4
                    retry = reply_headers.get("retry-after") or reply_headers.get("Retry-After")
                    if retry:
                        adapters.add(label + "-retry-after",
                                     bytes([selector, 31, 1]) + retry.encode() + b"\n" + reply)
                    adapters.add(label, bytes([selector, 255, 0]) + reply)
                    if stream:
                        adapters.add(label + "-bytewise", bytes([selector, 0, 0]) + reply)
                    if stream and status == 200:
                        ndjson = kind == "ollama"
                        parsers.add(label, bytes([(7 << 2) | (1 if ndjson else 0)]) + reply)
                        parsers.add(label + "-bounded",
                                    bytes([(1 << 2) | 2 | (1 if ndjson else 0)]) + reply)
                    for i, text in enumerate(json_texts(reply)[:6]):
                        json_view.add(f"{label}-{i}", text)
    finally:
        process.terminate()
        process.wait(timeout=10)
    # Stream shapes the fake does not send: CR and CRLF line ends, comments, ids, retry fields,
    # multi-line data, a final event without its blank line.
    for label, text in {
        "crlf": b"event: delta\r\ndata: {\"a\":1}\r\n\r\n: comment\r\nid: 7\r\nretry: 10\r\n\r\n",
        "cr": b"data: one\rdata: two\r\rdata:three\r\r",
        "multiline": b"data: {\"x\":\ndata: 2}\n\nevent: end\ndata: [DONE]\n\n",
        "cut": b"data: {\"partial\": tr",
        "ndjson-tail": b"{\"done\":false}\n\n{\"done\":true}",
    }.items():
        parsers.add(label, bytes([3 << 2 | (1 if label.startswith("ndjson") else 0)]) + text)
    for label, text in {
        "numbers": b"[0,-0,1e308,-1e-308,1.5e-7,18446744073709551615,-9223372036854775808,"
                   b"18446744073709551616,3.141592653589793238462643383279]",
        "escapes": b"{\"k\":\"\\u00e9\\ud83d\\ude00\\n\\\"\\\\\\/\",\"k\":null}",
        "nested": b"{\"a\":[{\"b\":[[[[{}]]]]},true,false,null]}",
        "utf8": "{\"t\":\"h\u00e9llo \u4e16\u754c \U0001F600\"}".encode(),
        "bom": b"\xef\xbb\xbf{}",
        "lone-surrogate": b"[\"\\ud800\"]",
    }.items():
        json_view.add(label, text)


def config_seeds():
    corpus = Corpus("worker_config")
    readme = (ROOT / "README.md").read_text()
    for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", readme, re.S)):
        corpus.add(f"readme-{i}", block.encode())
    for label, text in {
        "every-key": """worker:
  concurrency: 250
defaults:
  timeout_ms: 20000
  retry_count: 2
  temperature: 0.3
  enable_fallback: false
  connect_timeout_ms: 1000
  first_token_timeout_ms: 2000
  idle_timeout_ms: 3000
  backoff: {base_ms: 100, max_ms: 1600}
  retry_after_cap_ms: 9000
  breaker: {failures: 5, failure_rate: 0.25, window: 40, cooldown_ms: 7000}
  failover_on_content_filter: true
  fallbacks:
    - claude/claude-3-5-haiku
    - local/org/model:7b
    - {provider: ali, model: qwen-plus}
  fallback_providers: [claude, local]
providers:
  local: {type: openai-compatible, base_url: 'http://127.0.0.1:8000/v1', api_key_env: MY_KEY,
          max_in_flight: 8, context_window: 32000, headers: {X-Team: a}, stream_upstream: false}
  claude: {api_key_env: EMPTY_KEY, temperature: null, default_max_tokens: 1024}
""",
        "flow": "providers: {openai: {base_url: 'http://x//'}, ollama: {}, ali: {}}\n",
        "typo": "defaults:\n  timout_ms: 5\n",
        "bad-type": "providers:\n  p: {type: opena}\n",
        "anchors": "defaults: &d {retry_count: 1}\nproviders:\n  ollama: *d\n",
        "test-stack": """defaults:
  timeout_ms: 10000
  retry_count: 2
  connect_timeout_ms: 1000
  first_token_timeout_ms: 2000
  idle_timeout_ms: 2000
  backoff: {base_ms: 10, max_ms: 50}
providers:
  ollama: {type: ollama, base_url: "http://127.0.0.1:1"}
  openai: {type: openai, base_url: "http://127.0.0.1:1/v1", api_key_env: FAKE_KEY}
  claude: {type: anthropic, base_url: "http://127.0.0.1:1", api_key_env: FAKE_KEY}
  ali: {type: dashscope, base_url: "http://127.0.0.1:1/api/v1", api_key_env: FAKE_KEY}
  qwen: {type: openai-compatible, base_url: "http://127.0.0.1:1/compatible-mode/v1"}
""",
    }.items():
        corpus.add(label, text.encode())


def batch_seeds():
    corpus = Corpus("batch_line")

    def line(body, custom_id="req-1", **extra):
        value = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                 "body": body}
        value.update(extra)
        return json.dumps(value).encode()

    hi = [{"role": "user", "content": "Hi"}]
    corpus.add("simple", line({"model": "openai/gpt-4o-mini", "messages": hi}))
    corpus.add("full", line({
        "model": "openai-compatible/meta-llama/Llama-3-8B",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "lookup", "arguments": "{\"q\":1}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"}],
        "temperature": 0.2, "max_completion_tokens": 300, "top_p": 0.5, "stop": ["END", "x"],
        "stream": True,
        "tools": [{"type": "function", "function": {
            "name": "lookup", "description": "Look it up", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "response_format": {"type": "json_object"},
        "fallbacks": ["claude/claude-3-5-haiku", "ollama/"], "timeout_ms": 9000,
        "retry_count": 1, "metadata": {"team": "a"}}, custom_id="abc"))
    corpus.add("max-tokens", line({"model": "claude/claude-3-5-haiku", "messages": hi,
                                   "max_tokens": 5, "seed": 1, "user": "u"}))
    corpus.add("bad-model", line({"model": "gpt-4o", "messages": hi}))
    corpus.add("no-custom-id", b'{"method":"POST"}')
    corpus.add("wrong-url", line({"model": "a/b", "messages": hi}, url="/v1/embeddings"))
    corpus.add("not-json", b'{"custom_id": "x", ')
    corpus.add("output-lines",
               b'{"id":"batch_req_1","custom_id":"a","response":{"status_code":200},'
               b'"error":null}\n{"id":"batch_req_2","custom_id":"b"}\n{"torn":')


# fuzz_formats.cpp: byte 0 = API (bit 0: Anthropic), default provider (bit 1), batch form
# (bit 2, OpenAI only).
OPENAI, ANTHROPIC, DEFAULTED, BATCH_FORM = 0, 1, 2, 4


def formats_seeds():
    corpus = Corpus("formats")

    def add(label, selector, body):
        text = body if isinstance(body, bytes) else json.dumps(body).encode()
        corpus.add(label, bytes([selector]) + text)

    hi = [{"role": "user", "content": "Hi"}]
    openai_full = {
        "model": "gpt-4o",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8=",
                                                    "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "lookup", "arguments": "{\"q\":1}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "name": "lookup",
             "content": [{"type": "text", "text": "42"}]}],
        "temperature": 0.2, "top_p": 0.5, "max_tokens": 10, "max_completion_tokens": 300,
        "stop": ["END", "STOP"], "n": 1, "user": "u-7", "metadata": {"team": "a", "n": 3},
        "tools": [{"type": "function", "function": {
            "name": "lookup", "description": "Look it up",
            "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "x", "schema": {"type": "object"}}},
        "stream": True, "stream_options": {"include_usage": True},
        "fallbacks": ["claude/claude-3-5-haiku"], "timeout_ms": 9000, "retry_count": 1,
        "priority": "batch", "frequency_penalty": 0.5, "seed": 7, "logit_bias": {"50256": -100}}
    add("openai-full", OPENAI, openai_full)
    add("openai-full-batch", OPENAI | BATCH_FORM, dict(openai_full, model="openai/gpt-4o"))
    add("openai-simple", OPENAI, {"model": "openai/gpt-4o-mini", "messages": hi})
    add("openai-bare", OPENAI | DEFAULTED, {"model": "llama3", "messages": hi, "stream": False})
    add("openai-unknown-model", OPENAI, {"model": "nope", "messages": hi})
    add("openai-json-object", OPENAI, {"model": "gpt-4o", "messages": hi,
                                       "response_format": {"type": "json_object"},
                                       "tool_choice": "required"})
    add("openai-bad-role", OPENAI, {"model": "gpt-4o", "messages": [{"role": "robot"}]})
    anthropic_full = {
        "model": "sonnet", "max_tokens": 1024,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "aGVsbG8="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/c.png"}},
                {"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Use the tool.", "signature": "sig"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": "18C"}]},
                {"type": "text", "text": "And tomorrow?"}]}],
        "tools": [{"name": "weather", "description": "Weather now",
                   "input_schema": {"type": "object",
                                    "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "any"},
        "stop_sequences": ["\n\nHuman:"], "temperature": 0.5, "top_p": 0.9, "top_k": 5,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": "u-1"}, "stream": True, "timeout_ms": 5000,
        "fallbacks": ["openai/gpt-4o"]}
    add("anthropic-full", ANTHROPIC, anthropic_full)
    add("anthropic-simple", ANTHROPIC, {"model": "claude/claude-3-5-haiku", "max_tokens": 64,
                                        "messages": hi})
    add("anthropic-bare", ANTHROPIC | DEFAULTED, {"model": "llama3", "max_tokens": 8,
                                                  "system": "Be brief.", "messages": hi,
                                                  "tool_choice": {"type": "none"}})
    add("anthropic-tool-error", ANTHROPIC, {
        "model": "sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "is_error": True, "content": "boom"}]}]})
    add("anthropic-no-max-tokens", ANTHROPIC, {"model": "m", "messages": hi})
    add("not-json", OPENAI, b'{"model": "gpt-4o", "messages": [')
    add("deep", OPENAI, b'{"metadata":' + b'[' * 100 + b']' * 100 + b'}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fake-provider", required=True, help="path of the fake-provider binary")
    args = parser.parse_args()
    protocol_seeds()
    provider_seeds(os.path.abspath(args.fake_provider))
    config_seeds()
    batch_seeds()
    formats_seeds()
    for directory in sorted(CORPUS.iterdir()):
        files = list(directory.iterdir())
        size = sum(f.stat().st_size for f in files)
        print(f"{directory.name}: {len(files)} files, {size} bytes")


if __name__ == "__main__":
    main()
