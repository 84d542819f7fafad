// The official Anthropic SDK (npm `@anthropic-ai/sdk` 1.x) against dispatch-gateway's
// POST /v1/messages and GET /v1/models: every provider behind the Anthropic format.
//   node anthropic.mjs GATEWAY_URL KEYED_GATEWAY_URL FAKE_URL

import assert from 'node:assert/strict';
import { test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { ADMIN_KEY, LIMITED_KEY, expectError, PIXEL_PNG, urls } from './lib.mjs';

const { gateway, keyed } = urls();
const client = new Anthropic({ apiKey: 'unused', baseURL: gateway, maxRetries: 0 });
const FULL = 'reply to: hello there world lorem ipsum dolor';
const hello = [{ role: 'user', content: 'hello there world' }];

const weatherTool = {
  name: 'get_weather',
  description: 'weather for a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

test('messages, not streamed, from an OpenAI-format provider', async () => {
  const message = await client.messages.create({
    model: 'openai/gpt-4o', max_tokens: 100, system: 'be brief', messages: hello,
  });
  assert.equal(message.type, 'message');
  assert.equal(message.role, 'assistant');
  assert.match(message.id, /^msg_/);
  assert.equal(message.model, 'openai/gpt-4o');
  assert.deepEqual(message.content, [{ type: 'text', text: FULL }]);
  assert.equal(message.stop_reason, 'end_turn');
  assert.equal(message.usage.input_tokens, 5);
  assert.equal(message.usage.output_tokens, 8);
  assert.match(message._request_id, /^[0-9a-f]{32}$/);
});

test('max_tokens and stop reasons', async () => {
  const cut = await client.messages.create({ model: 'claude/claude-sonnet', max_tokens: 2, messages: hello });
  assert.equal(cut.content[0].text, 'reply to:');
  assert.equal(cut.stop_reason, 'max_tokens');
  const stopped = await client.messages.create({
    model: 'claude/claude-sonnet', max_tokens: 100, stop_sequences: ['ipsum'], messages: hello,
  });
  assert.equal(stopped.stop_reason, 'stop_sequence');
});

test('messages, streamed: text events and the final message', async () => {
  const stream = client.messages.stream({ model: 'ollama/llama3.2', max_tokens: 100, messages: hello });
  const deltas = [];
  stream.on('text', (delta) => deltas.push(delta));
  const message = await stream.finalMessage();
  assert.equal(deltas.join(''), FULL);
  assert.deepEqual(message.content, [{ type: 'text', text: FULL }]);
  assert.equal(message.stop_reason, 'end_turn');
  assert.equal(message.usage.output_tokens, 8);
});

test('messages, streamed: the raw event sequence', async () => {
  const stream = await client.messages.create({
    model: 'claude/claude-sonnet~tokens=2', max_tokens: 100, stream: true, messages: hello,
  });
  const types = [];
  for await (const event of stream) types.push(event.type);
  assert.deepEqual(types.filter((t) => t !== 'ping'), [
    'message_start', 'content_block_start', 'content_block_delta', 'content_block_delta',
    'content_block_stop', 'message_delta', 'message_stop',
  ]);
});

test('tool_use streamed with input_json_delta, then the tool result', async () => {
  const stream = client.messages.stream({
    model: 'openai/gpt-4o', max_tokens: 200, tools: [weatherTool], tool_choice: { type: 'any' },
    messages: [{ role: 'user', content: 'weather in Paris' }],
  });
  const message = await stream.finalMessage();
  assert.equal(message.stop_reason, 'tool_use');
  const use = message.content.find((block) => block.type === 'tool_use');
  assert.ok(use, JSON.stringify(message.content));
  assert.equal(use.name, 'get_weather');
  assert.deepEqual(use.input, { city: 'fake-city' });
  const answer = await client.messages.create({
    model: 'openai/gpt-4o', max_tokens: 200, tools: [weatherTool],
    messages: [
      { role: 'user', content: 'weather in Paris' },
      { role: 'assistant', content: message.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'rain' }] },
    ],
  });
  assert.equal(answer.stop_reason, 'end_turn');
  assert.match(answer.content[0].text, /^tool result: rain/);
});

test('thinking, streamed as thinking_delta before the text', async () => {
  const stream = client.messages.stream({
    model: 'claude/claude-sonnet~tokens=3', max_tokens: 2048,
    thinking: { type: 'enabled', budget_tokens: 1024 },
    messages: [{ role: 'user', content: 'think' }],
  });
  let thinking = '';
  stream.on('thinking', (delta) => { thinking += delta; });
  const message = await stream.finalMessage();
  assert.ok(thinking.length > 0);
  assert.equal(message.content[0].type, 'thinking');
  assert.equal(message.content[0].thinking, thinking);
  assert.deepEqual(message.content[1], { type: 'text', text: 'reply to: think' });
});

test('an image block', async () => {
  const message = await client.messages.create({
    model: 'openai/gpt-4o', max_tokens: 100,
    messages: [{
      role: 'user',
      content: [
        { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PIXEL_PNG } },
        { type: 'text', text: 'what is this' },
      ],
    }],
  });
  assert.match(message.content[0].text, /^\[1 images\] reply to: what is this/);
});

test('models.list in Anthropic\'s format', async () => {
  const models = [];
  for await (const model of client.models.list()) models.push(model);
  assert.ok(models.length > 0);
  assert.equal(models[0].type, 'model');
  assert.ok(models.some((m) => m.id === 'fast'));
});

test('errors raise the typed SDK error with the documented status', async () => {
  const ask = (model, extra = {}) => client.messages.create({
    model, max_tokens: 10, messages: hello, retry_count: 0, fallbacks: [], ...extra,
  });
  const bad = await expectError(() => ask('claude/x', { temperature: 1.5 }), Anthropic.BadRequestError);
  assert.equal(bad.error.error.type, 'invalid_request_error');
  const missing = await expectError(() => ask('claude/no-such-model'), Anthropic.NotFoundError);
  assert.equal(missing.error.error.type, 'not_found_error');
  const limited = await expectError(() => ask('claude/x~status=429'), Anthropic.RateLimitError);
  assert.equal(limited.headers.get('retry-after'), '1');
  const overloaded = await expectError(() => ask('claude/x~status=529'), Anthropic.OverloadedError);
  assert.equal(overloaded.error.error.type, 'overloaded_error');
  await expectError(() => ask('claude/x~status=500'), Anthropic.InternalServerError);
  const slow = await expectError(() => ask('claude/x~hang', { timeout_ms: 300 }),
                                 Anthropic.GatewayTimeoutError);
  assert.equal(slow.error.error.type, 'timeout_error');
});

test('an error mid-stream raises an APIError, never a short message', async () => {
  const stream = client.messages.stream({
    model: 'claude/x~cut_after=2~chunk_delay_ms=50', max_tokens: 100, messages: hello, retry_count: 0, fallbacks: [],
  });
  let text = '';
  stream.on('text', (delta) => { text += delta; });
  await expectError(() => stream.finalMessage(), Anthropic.APIError);
  assert.equal(text, 'reply to: ');
});

test('a restart that repeats what was sent is spliced', async () => {
  const stream = client.messages.stream({
    model: 'claude/x~cut_after=3~chunk_delay_ms=50', max_tokens: 100, messages: hello, retry_count: 0,
    fallbacks: ['openai/gpt-4o'],
  });
  const message = await stream.finalMessage();
  assert.deepEqual(message.content, [{ type: 'text', text: FULL }]);
});

test('keys: x-api-key or Bearer, 401 and 403 in Anthropic\'s shape', async () => {
  const bearer = new Anthropic({ apiKey: ADMIN_KEY, baseURL: keyed, maxRetries: 0 });
  const ok = await bearer.messages.create({ model: 'claude/x', max_tokens: 10, messages: hello });
  assert.equal(ok.content[0].text, 'reply to: hello there world lorem ipsum dolor');
  const legacy = new Anthropic({
    apiKey: null, authToken: null, baseURL: keyed, maxRetries: 0,
    defaultHeaders: { 'x-api-key': LIMITED_KEY, 'anthropic-version': '2023-06-01' },
  });
  const denied = await expectError(
    () => legacy.messages.create({ model: 'claude/x', max_tokens: 10, messages: hello }),
    Anthropic.PermissionDeniedError);
  assert.equal(denied.error.error.type, 'permission_error');
  const nobody = new Anthropic({ apiKey: 'sk-nobody', baseURL: keyed, maxRetries: 0 });
  const refused = await expectError(
    () => nobody.messages.create({ model: 'claude/x', max_tokens: 10, messages: hello }),
    Anthropic.AuthenticationError);
  assert.equal(refused.error.error.type, 'authentication_error');
});
