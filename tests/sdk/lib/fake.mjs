// Helpers shared by the SDK conformance scripts: where the server under test is, and what the
// fake provider logged. Each script takes the host URL (http://127.0.0.1:PORT) as argv[2].

import assert from 'node:assert/strict';

export function hostUrl() {
  const url = process.argv[2];
  if (!url || !/^http:\/\/[^/]+$/.test(url)) {
    // A usage error, not a test failure: say so and stop with the same code as the C++ tools.
    console.error(`usage: node ${process.argv[1]} http://127.0.0.1:PORT (got ${url ?? 'nothing'})`);
    process.exit(2);
  }
  return url;
}

// The attempts the fake provider logged for `model` (exact model string, directives included).
export async function fakeLog(host, model) {
  const response = await fetch(`${host}/_fake/log?model=${encodeURIComponent(model)}`);
  assert.equal(response.status, 200);
  return (await response.json()).attempts;
}

export async function fakeStats(host) {
  const response = await fetch(`${host}/_fake/stats`);
  assert.equal(response.status, 200);
  return response.json();
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
