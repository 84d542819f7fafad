// What SDK users see of fake-provider's quotas (started with --limit-rpm 1 --limit-tpm 100000):
// x-ratelimit-* headers on answers, and a 429 that each SDK raises as its typed rate-limit
// error with Retry-After.
//   node quota.mjs http://127.0.0.1:PORT

import assert from 'node:assert/strict';
import { test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { Ollama } from 'ollama';
import OpenAI from 'openai';
import { expectError, fakeStats, hostUrl } from './lib/fake.mjs';

const host = hostUrl();

function assertRetryAfter(headers) {
  const seconds = Number(headers.get('retry-after'));
  assert.ok(seconds >= 1 && seconds <= 60, `retry-after ${headers.get('retry-after')}`);
  assert.ok(Number(headers.get('retry-after-ms')) > 0);
}

test('OpenAI: headers on the answer, RateLimitError past the limit', async () => {
  const client = new OpenAI({ apiKey: 'sk-openai', baseURL: `${host}/v1`, maxRetries: 0 });
  const ask = () => client.chat.completions.create({
    model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }],
  });
  const { response } = await ask().withResponse();
  assert.equal(response.headers.get('x-ratelimit-limit-requests'), '1');
  assert.equal(response.headers.get('x-ratelimit-remaining-requests'), '0');
  assert.equal(response.headers.get('x-ratelimit-reset-requests'), '1m0s');
  assert.equal(response.headers.get('x-ratelimit-limit-tokens'), '100000');
  assert.equal(response.headers.get('x-ratelimit-remaining-tokens'), String(100000 - 9));

  const limited = await expectError(ask, OpenAI.RateLimitError);
  assert.equal(limited.code, 'rate_limit_exceeded');
  assert.equal(limited.type, 'requests');
  assertRetryAfter(limited.headers);

  // Tokens: more than the minute's quota in one request.
  const greedy = new OpenAI({ apiKey: 'sk-greedy', baseURL: `${host}/v1`, maxRetries: 0 });
  const tokens = await expectError(() => greedy.chat.completions.create({
    model: 'gpt-4o~tokens=100000', messages: [{ role: 'user', content: 'all of it' }],
  }), OpenAI.RateLimitError);
  assert.equal(tokens.type, 'tokens');
});

test('Anthropic: RateLimitError with both header families', async () => {
  const client = new Anthropic({ apiKey: 'sk-anthropic', baseURL: host, maxRetries: 0 });
  const ask = () => client.messages.create({
    model: 'claude', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }],
  });
  const { response } = await ask().withResponse();
  assert.equal(response.headers.get('anthropic-ratelimit-requests-limit'), '1');
  assert.equal(response.headers.get('anthropic-ratelimit-requests-remaining'), '0');
  assert.equal(response.headers.get('x-ratelimit-remaining-requests'), '0');

  const limited = await expectError(ask, Anthropic.RateLimitError);
  assert.equal(limited.error.error.type, 'rate_limit_error');
  assertRetryAfter(limited.headers);
});

test('Ollama: a ResponseError with status 429', async () => {
  const ollama = new Ollama({ host });
  const ask = () => ollama.chat({ model: 'llama3.2', messages: [{ role: 'user', content: 'x' }] });
  await ask();
  const limited = await expectError(ask, Error);
  assert.equal(limited.name, 'ResponseError');
  assert.equal(limited.status_code, 429);
});

test('the refusals are counted', async () => {
  const stats = await fakeStats(host);
  assert.equal(stats.rate_limited_total, 4);
  assert.equal(stats.limit_rpm, 1);
  assert.equal(stats.limit_tpm, 100000);
});
