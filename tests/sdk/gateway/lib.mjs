// Helpers of the gateway's SDK scripts: where the gateways and the fake provider are.
//   node <script>.mjs GATEWAY_URL KEYED_GATEWAY_URL FAKE_URL
// GATEWAY_URL serves without keys; KEYED_GATEWAY_URL accepts the keys below (gateway.yaml of
// tests/gateway/gateway_integration_test.cpp) and limits bodies to 64 KiB.

import assert from 'node:assert/strict';

export const ADMIN_KEY = 'sk-gw-admin';      // every model
export const LIMITED_KEY = 'sk-gw-limited';  // openai/* only

export function urls() {
  const [gateway, keyed, fake] = process.argv.slice(2);
  for (const url of [gateway, keyed, fake]) {
    if (!url || !/^http:\/\/[^/]+$/.test(url)) {
      console.error(`usage: node ${process.argv[1]} GATEWAY_URL KEYED_GATEWAY_URL FAKE_URL`);
      process.exit(2);
    }
  }
  return { gateway, keyed, fake };
}

// The attempts the fake provider logged for `model` (exact model string, directives included).
export async function fakeLog(fake, model) {
  const response = await fetch(`${fake}/_fake/log?model=${encodeURIComponent(model)}`);
  assert.equal(response.status, 200);
  return (await response.json()).attempts;
}

// Runs `fn` expecting it to throw an instance of `errorClass`; returns the error.
export async function expectError(fn, errorClass) {
  try {
    await fn();
  } catch (error) {
    assert.ok(error instanceof errorClass,
              `expected ${errorClass.name}, got ${error?.constructor?.name}: ${error?.message}`);
    return error;
  }
  assert.fail(`expected ${errorClass.name}, nothing was thrown`);
}

// A 1x1 PNG, base64.
export const PIXEL_PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';
