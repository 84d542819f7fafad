// The official OpenAI SDK (npm `openai`) against fake-provider's OpenAI and DashScope
// compatible-mode endpoints: what a user of the SDK sees must be what the real API gives.
//   node openai.mjs http://127.0.0.1:PORT

import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI from 'openai';
import { expectError, fakeLog, hostUrl, PIXEL_PNG } from './lib/fake.mjs';

const host = hostUrl();
// No retries unless a test asks: a typed error must come from the first answer.
const client = new OpenAI({ apiKey: 'sk-test', baseURL: `${host}/v1`, maxRetries: 0 });

const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'weather for a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' }, days: { type: 'integer' } },
      required: ['city'],
    },
  },
};

test('chat, not streamed', async () => {
  const completion = await client.chat.completions.create({
    model: 'gpt-4o',
    messages: [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'hello there world' },
    ],
  });
  assert.equal(completion.object, 'chat.completion');
  assert.match(completion.id, /^chatcmpl-/);
  assert.equal(completion.model, 'gpt-4o');
  assert.equal(completion.choices.length, 1);
  assert.equal(completion.choices[0].message.role, 'assistant');
  assert.equal(completion.choices[0].message.content,
               'reply to: hello there world lorem ipsum dolor');
  assert.equal(completion.choices[0].finish_reason, 'stop');
  assert.deepEqual(completion.usage,
                   { prompt_tokens: 5, completion_tokens: 8, total_tokens: 13 });
});

test('chat, raw response carries the request id', async () => {
  const { data, response } = await client.chat.completions
    .create({ model: 'gpt-4o~tokens=2', messages: [{ role: 'user', content: 'hi' }] })
    .withResponse();
  assert.equal(data.choices[0].message.content, 'reply to:');
  assert.ok(response.headers.get('x-request-id'));
  assert.equal(data._request_id, response.headers.get('x-request-id'));
});

test('chat, max_completion_tokens cuts with finish_reason length', async () => {
  const completion = await client.chat.completions.create({
    model: 'gpt-4o',
    max_completion_tokens: 3,
    messages: [{ role: 'user', content: 'x y z' }],
  });
  assert.equal(completion.choices[0].message.content, 'reply to: x');
  assert.equal(completion.choices[0].finish_reason, 'length');
  assert.equal(completion.usage.completion_tokens, 3);
});

test('chat, streamed with stream_options.include_usage', async () => {
  const stream = await client.chat.completions.create({
    model: 'gpt-4o~tokens=4',
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'hi' }],
  });
  let text = '';
  let role;
  let finish;
  let usage;
  let chunks = 0;
  for await (const chunk of stream) {
    ++chunks;
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) {
      assert.deepEqual(chunk.choices, [], 'the usage chunk has no choices');
      usage = chunk.usage;
      continue;
    }
    const choice = chunk.choices[0];
    role ??= choice.delta.role;
    text += choice.delta.content ?? '';
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  assert.equal(role, 'assistant');
  assert.equal(text, 'reply to: hi lorem');
  assert.equal(finish, 'stop');
  assert.deepEqual(usage, { prompt_tokens: 1, completion_tokens: 4, total_tokens: 5 });
  assert.ok(chunks >= 6, `role + 4 content + finish + usage chunks, got ${chunks}`);
});

test('chat, streamed through the stream helper', async () => {
  const runner = client.chat.completions.stream({
    model: 'gpt-4o~tokens=3',
    messages: [{ role: 'user', content: 'abc' }],
  });
  const deltas = [];
  runner.on('content', (delta) => deltas.push(delta));
  const completion = await runner.finalChatCompletion();
  assert.deepEqual(deltas, ['reply ', 'to: ', 'abc']);
  assert.equal(completion.choices[0].message.content, 'reply to: abc');
  assert.equal(completion.choices[0].finish_reason, 'stop');
});

test('tools: a tool call, then the tool result', async () => {
  const first = await client.chat.completions.create({
    model: 'gpt-4o',
    tools: [weatherTool],
    messages: [{ role: 'user', content: 'use the weather tool for Paris' }],
  });
  const choice = first.choices[0];
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(choice.message.content, null);
  assert.equal(choice.message.tool_calls.length, 1);
  const call = choice.message.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.match(call.id, /^call_/);
  assert.equal(call.function.name, 'get_weather');
  assert.equal(typeof call.function.arguments, 'string', 'arguments are a JSON string');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'fake-city', days: 1 });

  const second = await client.chat.completions.create({
    model: 'gpt-4o',
    tools: [weatherTool],
    messages: [
      { role: 'user', content: 'use the weather tool for Paris' },
      choice.message,
      { role: 'tool', tool_call_id: call.id, content: 'sunny and warm' },
    ],
  });
  assert.equal(second.choices[0].finish_reason, 'stop');
  assert.match(second.choices[0].message.content, /^tool result: sunny and warm/);
});

test('tools: a streamed tool call assembles from its argument deltas', async () => {
  const runner = client.chat.completions.stream({
    model: 'gpt-4o',
    tools: [weatherTool],
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
    messages: [{ role: 'user', content: 'Paris please' }],
  });
  const completion = await runner.finalChatCompletion();
  const message = completion.choices[0].message;
  assert.equal(completion.choices[0].finish_reason, 'tool_calls');
  assert.equal(message.tool_calls.length, 1);
  assert.equal(message.tool_calls[0].function.name, 'get_weather');
  assert.deepEqual(JSON.parse(message.tool_calls[0].function.arguments),
                   { city: 'fake-city', days: 1 });
});

test('an image part', async () => {
  const completion = await client.chat.completions.create({
    model: 'gpt-4o',
    messages: [{
      role: 'user',
      content: [
        { type: 'text', text: 'what is this' },
        { type: 'image_url', image_url: { url: `data:image/png;base64,${PIXEL_PNG}`, detail: 'low' } },
      ],
    }],
  });
  assert.match(completion.choices[0].message.content, /^\[1 images\] reply to: what is this/);
});

test('models.list', async () => {
  const models = [];
  for await (const model of client.models.list()) models.push(model);
  assert.ok(models.length > 0);
  assert.equal(models[0].object, 'model');
  assert.equal(typeof models[0].id, 'string');
});

test('errors raise the typed SDK error', async () => {
  const ask = (model, extra = {}) => client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'hi' }], ...extra,
  });
  const limited = await expectError(() => ask('gpt-4o~status=429~retry_after=7'),
                                    OpenAI.RateLimitError);
  assert.equal(limited.status, 429);
  assert.equal(limited.code, 'rate_limit_exceeded');
  assert.equal(limited.headers.get('retry-after'), '7');
  assert.ok(limited.requestID, 'the x-request-id header reaches the error');

  const bad = await expectError(() => ask('gpt-4o', { temperature: 5 }), OpenAI.BadRequestError);
  assert.equal(bad.status, 400);
  assert.equal(bad.type, 'invalid_request_error');
  assert.equal(bad.param, 'temperature');

  const missing = await expectError(() => ask('no-such-model'), OpenAI.NotFoundError);
  assert.equal(missing.code, 'model_not_found');

  const auth = await expectError(() => ask('gpt-4o~status=401'), OpenAI.AuthenticationError);
  assert.equal(auth.code, 'invalid_api_key');

  const context = await expectError(() => ask('gpt-4o~context_length'), OpenAI.BadRequestError);
  assert.equal(context.code, 'context_length_exceeded');

  await expectError(() => ask('gpt-4o~status=503'), OpenAI.InternalServerError);
});

test('an error mid-stream raises an APIError from the iterator', async () => {
  const stream = await client.chat.completions.create({
    model: 'gpt-4o~error_mid_stream=2',
    stream: true,
    messages: [{ role: 'user', content: 'hi' }],
  });
  let text = '';
  await expectError(async () => {
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  }, OpenAI.APIError);
  assert.equal(text, 'reply to: ');
});

test('the SDK retries a 429 after retry-after-ms and then succeeds', async () => {
  const retrying = new OpenAI({ apiKey: 'sk-test', baseURL: `${host}/v1`, maxRetries: 2 });
  const model = 'gpt-4o~fail_first=1~status=429~retry_after_ms=50~tokens=2';
  const completion = await retrying.chat.completions.create({
    model, messages: [{ role: 'user', content: 'again' }],
  });
  assert.equal(completion.choices[0].message.content, 'reply to:');
  const attempts = await fakeLog(host, model);
  assert.deepEqual(attempts.map((a) => a.status), [429, 200]);
});

test('DashScope compatible mode through the same SDK, thinking streamed', async () => {
  const dashscope = new OpenAI({
    apiKey: 'sk-ds', baseURL: `${host}/compatible-mode/v1`, maxRetries: 0,
  });
  const completion = await dashscope.chat.completions.create({
    model: 'qwen-plus', messages: [{ role: 'user', content: 'ni hao' }],
  });
  assert.match(completion.choices[0].message.content, /^reply to: ni hao/);

  const stream = await dashscope.chat.completions.create({
    model: 'qwen-plus~tokens=3',
    stream: true,
    stream_options: { include_usage: true },
    enable_thinking: true,
    messages: [{ role: 'user', content: 'think' }],
  });
  let reasoning = '';
  let text = '';
  let usage;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    const delta = chunk.choices[0]?.delta ?? {};
    reasoning += delta.reasoning_content ?? '';
    text += delta.content ?? '';
  }
  assert.ok(reasoning.length > 0, 'reasoning_content streamed first');
  assert.equal(text, 'reply to: think');
  assert.equal(usage.completion_tokens, 3);

  const limited = await expectError(
    () => dashscope.chat.completions.create({
      model: 'qwen-plus~status=429', messages: [{ role: 'user', content: 'x' }],
    }),
    OpenAI.RateLimitError);
  assert.equal(limited.code, 'Throttling.RateQuota');
});
