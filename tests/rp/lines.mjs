// What both openid-client scripts share: their environment, and the JSON-lines conversation with
// tests/rp/test_certified_rp.py (one object per line on stdout, answers on stdin).
import * as readline from 'node:readline'

export const env = (name) => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set`)
  return value
}

export const say = (step, details = {}) =>
  process.stdout.write(JSON.stringify({ step, ...details }) + '\n')

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
export async function ask (step, details) {
  say(step, details)
  const { value, done } = await lines.next()
  if (done) throw new Error(`stdin closed while waiting for the answer to ${step}`)
  return JSON.parse(value)
}

export function expect (condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`)
}
