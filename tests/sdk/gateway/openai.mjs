// The official OpenAI SDK (npm `openai`) against dispatch-gateway's POST /v1/chat/completions
// and GET /v1/models, with the whole stack behind it (broker, worker, fake provider).
//   node openai.mjs GATEWAY_URL KEYED_GATEWAY_URL FAKE_URL

import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI from 'openai';
import { ADMIN_KEY, LIMITED_KEY, expectError, fakeLog, PIXEL_PNG, urls } from './lib.mjs';

const { gateway, keyed, fake } = urls();
// No SDK retries: a typed error must come from the first answer.
const client = new OpenAI({ apiKey: 'unused', baseURL: `${gateway}/v1`, maxRetries: 0 });
const FULL = 'reply to: hello there world lorem ipsum dolor';
const hello = [{ role: 'user', content: 'hello there world' }];

const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'weather for a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

// Each test that makes a provider fail uses a model string of its own (`latency_ms=N` changes
// nothing else): the worker's circuit breaker counts failures per provider/model, and one
// test's failures must not open the circuit another test relies on.

// Reads a stream to its end: the text, the chunks, and what was thrown (if anything).
async function drain(stream) {
  const out = { text: '', chunks: [], error: null };
  try {
    for await (const chunk of stream) {
      out.chunks.push(chunk);
      out.text += chunk.choices[0]?.delta?.content ?? '';
    }
  } catch (error) {
    out.error = error;
  }
  return out;
}

test('chat, not streamed: the answer, who answered, the dispatch headers', async () => {
  const { data, response } = await client.chat.completions
    .create({ model: 'openai/gpt-4o', messages: [{ role: 'system', content: 'be brief' }, ...hello] })
    .withResponse();
  assert.equal(data.object, 'chat.completion');
  assert.equal(data.model, 'openai/gpt-4o');
  assert.equal(data.choices[0].message.role, 'assistant');
  assert.equal(data.choices[0].message.content, FULL);
  assert.equal(data.choices[0].finish_reason, 'stop');
  assert.deepEqual(data.usage, { prompt_tokens: 5, completion_tokens: 8, total_tokens: 13 });
  assert.match(response.headers.get('x-request-id'), /^[0-9a-f]{32}$/);
  assert.equal(data._request_id, response.headers.get('x-request-id'));
  assert.equal(response.headers.get('x-dispatch-provider'), 'openai');
  assert.equal(response.headers.get('x-dispatch-model'), 'gpt-4o');
  assert.equal(response.headers.get('x-dispatch-attempts'), '1');
});

test('an alias resolves to its target; a bare name goes to the default provider', async () => {
  const aliased = await client.chat.completions.create({ model: 'fast', messages: hello });
  assert.equal(aliased.model, 'openai/gpt-4o-mini');
  assert.equal(aliased.choices[0].message.content, FULL);
  const bare = await client.chat.completions.create({ model: 'llama3.2', messages: hello });
  assert.equal(bare.model, 'ollama/llama3.2');
});

test('sampling parameters reach the provider', async () => {
  const cut = await client.chat.completions.create({
    model: 'claude/claude-sonnet', max_completion_tokens: 3, stop: ['never'], messages: hello,
  });
  assert.equal(cut.choices[0].message.content, 'reply to: hello');
  assert.equal(cut.choices[0].finish_reason, 'length');
});

test('chat, streamed with include_usage: role first, usage last, then [DONE]', async () => {
  const stream = await client.chat.completions.create({
    model: 'claude/claude-sonnet', stream: true, stream_options: { include_usage: true }, messages: hello,
  });
  const { text, chunks, error } = await drain(stream);
  assert.equal(error, null);
  assert.equal(text, FULL);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  assert.equal(chunks.filter((c) => c.choices[0]?.delta?.role).length, 1);
  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));
  assert.equal(new Set(chunks.map((c) => c.id)).size, 1, 'one id for the whole stream');
  const finish = chunks.find((c) => c.choices[0]?.finish_reason);
  assert.equal(finish.choices[0].finish_reason, 'stop');
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage, { prompt_tokens: 3, completion_tokens: 8, total_tokens: 11 });
});

test('chat, streamed without include_usage has no usage chunk', async () => {
  const stream = await client.chat.completions.create({
    model: 'ollama/llama3.2', stream: true, messages: hello,
  });
  const { text, chunks, error } = await drain(stream);
  assert.equal(error, null);
  assert.equal(text, FULL);
  assert.ok(chunks.every((c) => c.choices.length === 1));
});

test('the stream helper assembles the final completion', async () => {
  const runner = client.chat.completions.stream({ model: 'openai/gpt-4o', messages: hello });
  const deltas = [];
  runner.on('content', (delta) => deltas.push(delta));
  const completion = await runner.finalChatCompletion();
  assert.equal(completion.choices[0].message.content, FULL);
  assert.equal(deltas.join(''), FULL);
});

test('tools: a tool call, then the tool result', async () => {
  const first = await client.chat.completions.create({
    model: 'openai/gpt-4o',
    tools: [weatherTool],
    tool_choice: 'required',
    messages: [{ role: 'user', content: 'weather in Paris' }],
  });
  const message = first.choices[0].message;
  assert.equal(first.choices[0].finish_reason, 'tool_calls');
  assert.equal(message.tool_calls.length, 1);
  assert.equal(message.tool_calls[0].type, 'function');
  assert.equal(message.tool_calls[0].function.name, 'get_weather');
  assert.deepEqual(JSON.parse(message.tool_calls[0].function.arguments), { city: 'fake-city' });
  const answer = await client.chat.completions.create({
    model: 'openai/gpt-4o',
    tools: [weatherTool],
    messages: [
      { role: 'user', content: 'weather in Paris' },
      message,
      { role: 'tool', tool_call_id: message.tool_calls[0].id, content: 'rain' },
    ],
  });
  assert.match(answer.choices[0].message.content, /^tool result: rain/);
});

test('tools, streamed: the call assembles from indexed deltas (from an Anthropic provider)', async () => {
  const runner = client.chat.completions.stream({
    model: 'claude/claude-sonnet',
    tools: [weatherTool],
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
    messages: [{ role: 'user', content: 'weather in Paris' }],
  });
  const completion = await runner.finalChatCompletion();
  const call = completion.choices[0].message.tool_calls[0];
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'fake-city' });
  assert.equal(completion.choices[0].finish_reason, 'tool_calls');
});

test('an image part, as a data: URL', async () => {
  const completion = await client.chat.completions.create({
    model: 'claude/claude-sonnet',
    messages: [{
      role: 'user',
      content: [
        { type: 'text', text: 'what is this' },
        { type: 'image_url', image_url: { url: `data:image/png;base64,${PIXEL_PNG}` } },
      ],
    }],
  });
  assert.match(completion.choices[0].message.content, /^\[1 images\] reply to: what is this/);
});

test('models.list: aliases and their targets', async () => {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  assert.ok(ids.includes('fast'), ids.join(','));
  assert.ok(ids.includes('openai/gpt-4o-mini'), ids.join(','));
  assert.ok(ids.includes('claude/claude-sonnet'), ids.join(','));
});

test('errors raise the typed SDK error with the documented status', async () => {
  const ask = (model, extra = {}) =>
    client.chat.completions.create({ model, messages: hello, retry_count: 0, fallbacks: [], ...extra });
  const bad = await expectError(() => ask('openai/gpt-4o', { temperature: 5 }), OpenAI.BadRequestError);
  assert.equal(bad.param, 'temperature');
  const missing = await expectError(() => ask('openai/no-such-model'), OpenAI.NotFoundError);
  assert.equal(missing.status, 404);
  const limited = await expectError(() => ask('openai/gpt-4o~status=429'), OpenAI.RateLimitError);
  assert.equal(limited.headers.get('retry-after'), '1');
  const broken = await expectError(() => ask('openai/gpt-4o~status=500'), OpenAI.InternalServerError);
  assert.equal(broken.status, 502);
  const busy = await expectError(() => ask('openai/gpt-4o~status=503'), OpenAI.InternalServerError);
  assert.equal(busy.status, 503);
  const slow = await expectError(() => ask('openai/gpt-4o~hang', { timeout_ms: 300 }),
                                 OpenAI.InternalServerError);
  assert.equal(slow.status, 504);
  assert.equal(slow.code, 'deadline');
  const filtered = await expectError(() => ask('openai/gpt-4o~content_filter'), OpenAI.BadRequestError);
  assert.equal(filtered.status, 400);
});

test('a failure before the first byte of a stream is an ordinary error status', async () => {
  await expectError(() => client.chat.completions.create({
    model: 'openai/no-such-model', stream: true, messages: hello, fallbacks: [],
  }), OpenAI.NotFoundError);
});

test('a stream cut after bytes were sent makes the SDK throw, never a short answer', async () => {
  const stream = await client.chat.completions.create({
    model: 'openai/gpt-4o~cut_after=3~chunk_delay_ms=50~latency_ms=1', stream: true, messages: hello,
    retry_count: 0, fallbacks: [],
  });
  const { text, chunks, error } = await drain(stream);
  assert.ok(error instanceof OpenAI.APIError, `expected an APIError, got ${error}`);
  assert.equal(text, 'reply to: hello ');
  assert.ok(!chunks.some((c) => c.choices[0]?.finish_reason), 'no finish_reason was sent');
});

test('an error event mid-stream from the provider makes the SDK throw', async () => {
  const stream = await client.chat.completions.create({
    model: 'openai/gpt-4o~error_mid_stream=2~chunk_delay_ms=50', stream: true, messages: hello, retry_count: 0,
    fallbacks: [],
  });
  const { error } = await drain(stream);
  assert.ok(error instanceof OpenAI.APIError, `expected an APIError, got ${error}`);
});

test('a restart that repeats what was sent is spliced: one seamless answer', async () => {
  const model = 'openai/gpt-4o~cut_after=3~chunk_delay_ms=50~latency_ms=2';
  const stream = await client.chat.completions.create({
    model, stream: true, messages: hello, retry_count: 0, fallbacks: ['claude/claude-sonnet'],
  });
  const { text, chunks, error } = await drain(stream);
  assert.equal(error, null);
  assert.equal(text, FULL, 'the client sees the complete answer once');
  assert.equal(chunks.filter((c) => c.choices[0]?.delta?.role).length, 1);
  const finish = chunks.find((c) => c.choices[0]?.finish_reason);
  assert.equal(finish.model, 'claude/claude-sonnet', 'the last chunk names who answered');
});

test('a restart that differs from what was sent ends the stream with an error', async () => {
  const stream = await client.chat.completions.create({
    model: 'openai/gpt-4o~cut_after=3~chunk_delay_ms=50~latency_ms=3', stream: true, messages: hello,
    retry_count: 0,
    fallbacks: ['claude/claude-sonnet~malformed_at=1'],
  });
  const { text, error } = await drain(stream);
  assert.ok(error instanceof OpenAI.APIError, `expected an APIError, got ${error}`);
  assert.equal(error.code, 'stream_diverged');
  assert.equal(text, 'reply to: hello ');
});

test('keys: 401 without one, 403 for a model the key may not use, 413 past the body limit', async () => {
  const anonymous = new OpenAI({ apiKey: 'sk-nobody', baseURL: `${keyed}/v1`, maxRetries: 0 });
  const refused = await expectError(
    () => anonymous.chat.completions.create({ model: 'openai/gpt-4o', messages: hello }),
    OpenAI.AuthenticationError);
  assert.equal(refused.code, 'invalid_api_key');
  const limited = new OpenAI({ apiKey: LIMITED_KEY, baseURL: `${keyed}/v1`, maxRetries: 0 });
  const ok = await limited.chat.completions.create({ model: 'openai/gpt-4o', messages: hello });
  assert.equal(ok.choices[0].message.content, FULL);
  const denied = await expectError(
    () => limited.chat.completions.create({ model: 'claude/claude-sonnet', messages: hello }),
    OpenAI.PermissionDeniedError);
  assert.equal(denied.code, 'model_not_allowed');
  const ids = [];
  for await (const model of limited.models.list()) ids.push(model.id);
  assert.ok(ids.every((id) => id.startsWith('openai/') || id === 'fast'), ids.join(','));
  const admin = new OpenAI({ apiKey: ADMIN_KEY, baseURL: `${keyed}/v1`, maxRetries: 0 });
  const huge = await expectError(() => admin.chat.completions.create({
    model: 'openai/gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(100000) }],
  }), OpenAI.APIError);
  assert.equal(huge.status, 413);
  const fine = await admin.chat.completions.create({ model: 'claude/claude-sonnet', messages: hello });
  assert.equal(fine.model, 'claude/claude-sonnet');
  // This gateway has no default_provider: a bare name that is no alias is an unknown model.
  const bare = await expectError(
    () => admin.chat.completions.create({ model: 'llama3.2', messages: hello }), OpenAI.NotFoundError);
  assert.equal(bare.code, 'model_not_found');
  assert.equal(bare.param, 'model');
});

test('the SDK\'s AbortController cancels the job at the provider', async () => {
  const model = 'openai/gpt-4o~chunk_delay_ms=300~tokens=30';
  const controller = new AbortController();
  const stream = await client.chat.completions.create(
    { model, stream: true, messages: hello }, { signal: controller.signal });
  for await (const chunk of stream) {
    if (chunk.choices[0]?.delta?.content) break;  // leaving the loop aborts the request
  }
  // The worker aborts its provider call once the gateway cancels the job.
  let attempt;
  for (let i = 0; i < 100; ++i) {
    [attempt] = await fakeLog(fake, 'gpt-4o~chunk_delay_ms=300~tokens=30');
    if (attempt?.client_closed_ms !== undefined) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.ok(attempt?.client_closed_ms !== undefined, JSON.stringify(attempt));
  assert.ok(attempt.chunks_sent < 30, `the provider stopped early (${attempt.chunks_sent} chunks)`);
});
