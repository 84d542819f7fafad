// The official Anthropic SDK (npm `@anthropic-ai/sdk`, 1.x: key as Authorization: Bearer,
// anthropic-version 2026-10-21) against fake-provider's Messages endpoint.
//   node anthropic.mjs http://127.0.0.1:PORT

import assert from 'node:assert/strict';
import { test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { expectError, fakeLog, hostUrl, PIXEL_PNG } from './lib/fake.mjs';

const host = hostUrl();
const client = new Anthropic({ apiKey: 'sk-ant-test', baseURL: host, maxRetries: 0 });

const weatherTool = {
  name: 'get_weather',
  description: 'weather for a city',
  input_schema: {
    type: 'object',
    properties: { city: { type: 'string' }, metric: { type: 'boolean' } },
    required: ['city'],
  },
};

test('messages, not streamed (the SDK 1.x headers are accepted)', async () => {
  const message = await client.messages.create({
    model: 'claude-sonnet',
    max_tokens: 100,
    system: 'be brief',
    messages: [{ role: 'user', content: 'hello there world' }],
  });
  assert.equal(message.type, 'message');
  assert.equal(message.role, 'assistant');
  assert.match(message.id, /^msg_/);
  assert.equal(message.model, 'claude-sonnet');
  assert.deepEqual(message.content,
                   [{ type: 'text', text: 'reply to: hello there world lorem ipsum dolor' }]);
  assert.equal(message.stop_reason, 'end_turn');
  assert.equal(message.stop_sequence, null);
  assert.equal(message.usage.input_tokens, 5);
  assert.equal(message.usage.output_tokens, 8);
  assert.ok(message._request_id, 'the request-id header reaches the result');
});

test('the key as x-api-key works as well (SDK 0.x style)', async () => {
  const legacy = new Anthropic({
    apiKey: null,
    authToken: null,
    baseURL: host,
    maxRetries: 0,
    defaultHeaders: { 'x-api-key': 'sk-ant-legacy', 'anthropic-version': '2023-06-01' },
  });
  const message = await legacy.messages.create({
    model: 'claude-sonnet~tokens=2', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }],
  });
  assert.equal(message.content[0].text, 'reply to:');
});

test('max_tokens and stop_sequences', async () => {
  const cut = await client.messages.create({
    model: 'claude-sonnet', max_tokens: 2, messages: [{ role: 'user', content: 'x' }],
  });
  assert.equal(cut.content[0].text, 'reply to:');
  assert.equal(cut.stop_reason, 'max_tokens');

  const stopped = await client.messages.create({
    model: 'claude-sonnet',
    max_tokens: 100,
    stop_sequences: ['ipsum'],
    messages: [{ role: 'user', content: 'x' }],
  });
  assert.equal(stopped.content[0].text, 'reply to: x lorem ');
  assert.equal(stopped.stop_reason, 'stop_sequence');
  assert.equal(stopped.stop_sequence, 'ipsum');
});

test('messages, streamed: text events and the final message', async () => {
  const stream = client.messages.stream({
    model: 'claude-sonnet~tokens=4',
    max_tokens: 100,
    messages: [{ role: 'user', content: 'hi' }],
  });
  const deltas = [];
  stream.on('text', (delta) => deltas.push(delta));
  const message = await stream.finalMessage();
  assert.deepEqual(deltas, ['reply ', 'to: ', 'hi ', 'lorem']);
  assert.deepEqual(message.content, [{ type: 'text', text: 'reply to: hi lorem' }]);
  assert.equal(message.stop_reason, 'end_turn');
  assert.equal(message.usage.output_tokens, 4);
});

test('messages, streamed: the raw event sequence', async () => {
  const stream = await client.messages.create({
    model: 'claude-sonnet~tokens=2',
    max_tokens: 100,
    stream: true,
    messages: [{ role: 'user', content: 'hi' }],
  });
  const types = [];
  for await (const event of stream) types.push(event.type);
  const meaningful = types.filter((t) => t !== 'ping');
  assert.deepEqual(meaningful, [
    'message_start', 'content_block_start', 'content_block_delta', 'content_block_delta',
    'content_block_stop', 'message_delta', 'message_stop',
  ]);
});

test('tool_use, streamed with input_json_delta', async () => {
  const stream = client.messages.stream({
    model: 'claude-sonnet',
    max_tokens: 200,
    tools: [weatherTool],
    tool_choice: { type: 'any' },
    messages: [{ role: 'user', content: 'weather in Paris' }],
  });
  const partials = [];
  stream.on('inputJson', (partial) => partials.push(partial));
  const message = await stream.finalMessage();
  assert.equal(message.stop_reason, 'tool_use');
  const use = message.content.find((block) => block.type === 'tool_use');
  assert.ok(use, JSON.stringify(message.content));
  assert.match(use.id, /^toolu_/);
  assert.equal(use.name, 'get_weather');
  assert.deepEqual(use.input, { city: 'fake-city', metric: true });
  assert.ok(partials.length >= 2, `input arrives in fragments (${partials.length})`);

  // The tool result goes back in a user message.
  const answer = await client.messages.create({
    model: 'claude-sonnet',
    max_tokens: 200,
    tools: [weatherTool],
    messages: [
      { role: 'user', content: 'weather in Paris' },
      { role: 'assistant', content: message.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'rain' }] },
    ],
  });
  assert.equal(answer.stop_reason, 'end_turn');
  assert.match(answer.content[0].text, /^tool result: rain/);
});

test('thinking, streamed: thinking and signature deltas before the text', async () => {
  const stream = client.messages.stream({
    model: 'claude-sonnet~tokens=3',
    max_tokens: 2048,
    thinking: { type: 'enabled', budget_tokens: 1024 },
    messages: [{ role: 'user', content: 'think' }],
  });
  let thinking = '';
  let signature = '';
  stream.on('thinking', (delta) => { thinking += delta; });
  stream.on('signature', (value) => { signature = value; });
  const message = await stream.finalMessage();
  assert.ok(thinking.length > 0);
  assert.ok(signature.length > 0);
  assert.equal(message.content[0].type, 'thinking');
  assert.equal(message.content[0].thinking, thinking);
  assert.equal(message.content[0].signature, signature);
  assert.deepEqual(message.content[1], { type: 'text', text: 'reply to: think' });
});

test('an image block', async () => {
  const message = await client.messages.create({
    model: 'claude-sonnet',
    max_tokens: 100,
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

test('models.list', async () => {
  const models = [];
  for await (const model of client.models.list()) models.push(model);
  assert.ok(models.length > 0);
  assert.equal(models[0].type, 'model');
});

test('errors raise the typed SDK error', async () => {
  const ask = (model, extra = {}) => client.messages.create({
    model, max_tokens: 10, messages: [{ role: 'user', content: 'hi' }], ...extra,
  });
  const limited = await expectError(() => ask('claude~status=429~retry_after=3'),
                                    Anthropic.RateLimitError);
  assert.equal(limited.status, 429);
  assert.equal(limited.error.type, 'error');
  assert.equal(limited.error.error.type, 'rate_limit_error');
  assert.equal(limited.headers.get('retry-after'), '3');
  assert.ok(limited.requestID);

  const bad = await expectError(() => ask('claude', { temperature: 1.5 }),
                                Anthropic.BadRequestError);
  assert.equal(bad.error.error.type, 'invalid_request_error');

  const missing = await expectError(() => ask('no-such-model'), Anthropic.NotFoundError);
  assert.equal(missing.error.error.type, 'not_found_error');

  const overloaded = await expectError(() => ask('claude~status=529'), Anthropic.OverloadedError);
  assert.equal(overloaded.error.error.type, 'overloaded_error');

  await expectError(() => ask('claude~status=500'), Anthropic.InternalServerError);
});

test('an error event mid-stream raises an APIError', async () => {
  const stream = client.messages.stream({
    model: 'claude~error_mid_stream=2',
    max_tokens: 100,
    messages: [{ role: 'user', content: 'hi' }],
  });
  let text = '';
  stream.on('text', (delta) => { text += delta; });
  const error = await expectError(() => stream.finalMessage(), Anthropic.APIError);
  assert.match(String(error.message), /overloaded/i);
  assert.equal(text, 'reply to: ');
});

test('the SDK retries a 529 and then succeeds', async () => {
  const retrying = new Anthropic({ apiKey: 'sk-ant-test', baseURL: host, maxRetries: 2 });
  const model = 'claude~fail_first=1~status=529~retry_after_ms=50~tokens=2';
  const message = await retrying.messages.create({
    model, max_tokens: 10, messages: [{ role: 'user', content: 'again' }],
  });
  assert.equal(message.content[0].text, 'reply to:');
  const attempts = await fakeLog(host, model);
  assert.deepEqual(attempts.map((a) => a.status), [529, 200]);
});
