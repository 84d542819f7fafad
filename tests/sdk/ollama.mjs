// The official Ollama JavaScript library (npm `ollama`) against fake-provider's Ollama API.
//   node ollama.mjs http://127.0.0.1:PORT

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Ollama } from 'ollama';
import { expectError, hostUrl, PIXEL_PNG } from './lib/fake.mjs';

const host = hostUrl();
const ollama = new Ollama({ host });

test('chat, not streamed', async () => {
  const response = await ollama.chat({
    model: 'llama3.2',
    messages: [
      { role: 'system', content: 'sys' },
      { role: 'user', content: 'hello you' },
    ],
  });
  assert.equal(response.model, 'llama3.2');
  assert.equal(response.done, true);
  assert.equal(response.done_reason, 'stop');
  assert.deepEqual(response.message,
                   { role: 'assistant', content: 'reply to: hello you lorem ipsum dolor sit' });
  assert.equal(response.prompt_eval_count, 3);
  assert.equal(response.eval_count, 8);
  // Typed as Date, delivered as the RFC 3339 string (nanoseconds) it parses from.
  assert.ok(!Number.isNaN(new Date(response.created_at).getTime()), String(response.created_at));
  for (const field of ['total_duration', 'load_duration', 'prompt_eval_duration', 'eval_duration']) {
    assert.ok(Number.isInteger(response[field]) && response[field] > 0, field);
  }
});

test('chat, streamed: fragments, then the done line with the counts', async () => {
  const stream = await ollama.chat({
    model: 'llama3.2~tokens=3',
    stream: true,
    messages: [{ role: 'user', content: 'yo' }],
  });
  const parts = [];
  let last;
  for await (const part of stream) {
    if (!part.done) parts.push(part.message.content);
    last = part;
  }
  assert.deepEqual(parts, ['reply ', 'to: ', 'yo']);
  assert.equal(last.done, true);
  assert.equal(last.done_reason, 'stop');
  assert.equal(last.eval_count, 3);
  assert.equal(last.prompt_eval_count, 1);
});

test('options.num_predict cuts with done_reason length', async () => {
  const response = await ollama.chat({
    model: 'llama3.2',
    options: { num_predict: 2, temperature: 0.2 },
    messages: [{ role: 'user', content: 'x' }],
  });
  assert.equal(response.message.content, 'reply to:');
  assert.equal(response.done_reason, 'length');
});

test('tools: a whole tool call with object arguments', async () => {
  const response = await ollama.chat({
    model: 'llama3.2',
    tools: [{
      type: 'function',
      function: {
        name: 'get_weather',
        description: 'weather',
        parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
      },
    }],
    messages: [{ role: 'user', content: 'call the tool' }],
  });
  const calls = response.message.tool_calls;
  assert.equal(calls.length, 1);
  assert.equal(calls[0].function.name, 'get_weather');
  assert.deepEqual(calls[0].function.arguments, { city: 'fake-city' });
  assert.equal(response.done_reason, 'stop');

  const answer = await ollama.chat({
    model: 'llama3.2',
    messages: [
      { role: 'user', content: 'call the tool' },
      response.message,
      { role: 'tool', content: 'cloudy', tool_name: 'get_weather' },
    ],
  });
  assert.match(answer.message.content, /^tool result: cloudy/);
});

test('think: message.thinking before the content', async () => {
  const response = await ollama.chat({
    model: 'qwen3~tokens=2', think: true, messages: [{ role: 'user', content: 'hm' }],
  });
  assert.ok(response.message.thinking && response.message.thinking.length > 0);
  assert.equal(response.message.content, 'reply to:');
});

test('an image (raw base64)', async () => {
  const response = await ollama.chat({
    model: 'llava',
    messages: [{ role: 'user', content: 'what is this', images: [PIXEL_PNG] }],
  });
  assert.match(response.message.content, /^\[1 images\] reply to: what is this/);
});

test('list(): the tags', async () => {
  const { models } = await ollama.list();
  assert.ok(models.length > 0);
  assert.equal(typeof models[0].name, 'string');
  assert.equal(typeof models[0].digest, 'string');
  assert.equal(models[0].details.format, 'gguf');
  assert.ok(!Number.isNaN(new Date(models[0].modified_at).getTime()), String(models[0].modified_at));
});

test('errors raise ResponseError with the status and the message', async () => {
  const missing = await expectError(
    () => ollama.chat({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
    Error);
  assert.equal(missing.name, 'ResponseError');
  assert.equal(missing.status_code, 404);
  assert.match(missing.error, /model 'no-such-model' not found/);

  const busy = await expectError(
    () => ollama.chat({ model: 'llama3.2~status=503', messages: [{ role: 'user', content: 'x' }] }),
    Error);
  assert.equal(busy.name, 'ResponseError');
  assert.equal(busy.status_code, 503);
});

test('an error line mid-stream raises from the iterator', async () => {
  const stream = await ollama.chat({
    model: 'llama3.2~error_mid_stream=2',
    stream: true,
    messages: [{ role: 'user', content: 'x' }],
  });
  let text = '';
  await expectError(async () => {
    for await (const part of stream) text += part.message?.content ?? '';
  }, Error);
  assert.equal(text, 'reply to: ');
});
