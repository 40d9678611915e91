// `PUT /_connector/<id>/_error` through esgate with the official Node.js client
// (@elastic/elasticsearch 9.x), run by node's built-in test runner: `node --test tests/node/`.
//
// The binary is ESGATE_BIN (default target/debug/esgate), started as
// `esgate --dev --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --max-error-body-size 4MiB`;
// its ports come from the start-up line on stderr (`esgate started listen=127.0.0.1:PORT
// admin=127.0.0.1:PORT ...`), as in tests/python/conftest.py. It is stopped with SIGTERM at the
// end and must exit 0.
//
// The 413 test: a body over the limit must reach the client as esgate's 413 answer (a
// ResponseError), not as `ConnectionError: write EPIPE` because esgate closed the connection while
// the client was still writing; and with `maxRetries: 3` the client must not have sent it again.

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { randomUUID } from 'node:crypto'
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'

import { Client, errors } from '@elastic/elasticsearch'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const START_TIMEOUT_MS = 30_000
const STOP_TIMEOUT_MS = 15_000
const STARTED = /esgate started.*?\blisten="?(\d+\.\d+\.\d+\.\d+:\d+)/
const ADMIN = /\badmin="?(\d+\.\d+\.\d+\.\d+:\d+)/
const MAX_BODY = 4 * 1024 * 1024

let esgate // { proc, url, adminUrl, log, exited }

async function startEsgate (...extra) {
  const binary = process.env.ESGATE_BIN
    ? resolve(process.env.ESGATE_BIN)
    : resolve(REPO, 'target', 'debug', 'esgate')
  if (!existsSync(binary)) {
    throw new Error(`no esgate binary at ${binary}: run \`cargo build\` first, or set ESGATE_BIN`)
  }
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('ESGATE_') && k !== 'RUST_LOG'))
  const proc = spawn(binary, [
    '--dev', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0',
    '--log-format', 'text', '--log-level', 'info', ...extra
  ], { stdio: ['ignore', 'ignore', 'pipe'], env })
  const log = []
  const exited = new Promise(resolve => proc.on('exit', (code, signal) => resolve({ code, signal })))
  const started = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(
      `${binary} did not log its start-up line within ${START_TIMEOUT_MS} ms; stderr:\n${log.join('\n')}`)),
    START_TIMEOUT_MS)
    createInterface({ input: proc.stderr }).on('line', line => {
      log.push(line)
      const m = STARTED.exec(line)
      if (m) {
        clearTimeout(timer)
        const a = ADMIN.exec(line)
        resolve({ url: `http://${m[1]}`, adminUrl: a && `http://${a[1]}` })
      }
    })
    exited.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new Error(`${binary} exited (code ${code}, signal ${signal}) before its start-up line; stderr:\n${log.join('\n')}`))
    })
  })
  try {
    const { url, adminUrl } = await started
    return { proc, url, adminUrl, log, exited }
  } catch (e) {
    proc.kill('SIGKILL')
    throw e
  }
}

async function stopEsgate (gw) {
  gw.proc.kill('SIGTERM')
  let timer
  const timeout = new Promise(resolve => { timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS) })
  const result = await Promise.race([gw.exited, timeout])
  clearTimeout(timer)
  if (result === null) {
    gw.proc.kill('SIGKILL')
    throw new Error(`esgate did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM; stderr:\n${gw.log.join('\n')}`)
  }
  if (result.code !== 0) {
    throw new Error(`esgate exited with ${result.code} (signal ${result.signal}) after SIGTERM; stderr:\n${gw.log.join('\n')}`)
  }
}

// The sum of esgate_requests_total for PUT on the connector_error route, every status code.
async function connectorErrorPuts () {
  const res = await fetch(`${esgate.adminUrl}/metrics`)
  assert.equal(res.status, 200)
  let total = 0
  for (const line of (await res.text()).split('\n')) {
    if (line.startsWith('esgate_requests_total{') &&
        line.includes('route="connector_error"') && line.includes('method="PUT"')) {
      total += Number(line.slice(line.lastIndexOf(' ') + 1))
    }
  }
  return total
}

function newClient () {
  return new Client({ node: esgate.url, maxRetries: 3, requestTimeout: 10_000 })
}

async function newConnector (client) {
  const id = `node-${randomUUID().slice(0, 12)}`
  const resp = await client.connector.put({ connector_id: id, index_name: `search-${id}`, name: 'node e2e' })
  assert.equal(resp.result, 'created')
  return id
}

// Runs `call`, which must reject with a ResponseError; returns it. Any other error (above all a
// ConnectionError such as `write EPIPE`) fails with what it was.
async function expectResponseError (call) {
  try {
    await call()
  } catch (e) {
    if (e instanceof errors.ResponseError) return e
    const attempts = e?.meta?.meta?.attempts
    assert.fail(`expected a ResponseError, got ${e?.name}: ${e?.message} (attempts: ${attempts})`)
  }
  assert.fail('the request succeeded; expected an error answer')
}

before(async () => { esgate = await startEsgate('--max-error-body-size', '4MiB') })
after(async () => { if (esgate) await stopEsgate(esgate) })

test('a valid updateError is forwarded and answered 200', async () => {
  const client = newClient()
  try {
    const id = await newConnector(client)
    const resp = await client.connector.updateError({ connector_id: id, error: 'Houston, we have a problem!' },
      { meta: true })
    assert.equal(resp.statusCode, 200)
    assert.equal(resp.body.result, 'updated')
    const doc = await client.connector.get({ connector_id: id })
    assert.equal(doc.status, 'error')
    assert.equal(doc.error, 'Houston, we have a problem!')
  } finally {
    await client.close()
  }
})

test('an invalid body gets Elasticsearch\'s 400 x_content_parse_exception', async () => {
  const client = newClient()
  try {
    const id = await newConnector(client)
    const err = await expectResponseError(() => client.connector.updateError({ connector_id: id, body: { error: 1 } }))
    assert.equal(err.statusCode, 400)
    const cause = {
      type: 'x_content_parse_exception',
      reason: "[1:10] [connector_update_error_request] error doesn't support values of type: VALUE_NUMBER"
    }
    assert.deepEqual(err.body, { error: { root_cause: [cause], ...cause }, status: 400 })
    assert.equal(err.meta.meta.attempts, 0)
    // Answered by esgate: the connector is untouched.
    const doc = await client.connector.get({ connector_id: id })
    assert.equal(doc.status, 'created')
    assert.equal(doc.error, null)
  } finally {
    await client.close()
  }
})

test('an 8 MiB error over the 4 MiB limit gets a 413 answer, sent once (not EPIPE, no retry)', async () => {
  const client = newClient()
  try {
    const id = await newConnector(client)
    const error = 'x'.repeat(2 * MAX_BODY)
    const calls = await connectorErrorPuts()
    let err
    try {
      await client.connector.updateError({ connector_id: id, error })
    } catch (e) {
      err = e
    }
    const sent = await connectorErrorPuts() - calls
    const seen = err ? `${err.name}: ${err.message}` : 'a success'
    const attempts = err?.meta?.meta?.attempts
    const what = `got ${seen} after ${attempts} retries; esgate counted ${sent} call(s)`
    assert.ok(err instanceof errors.ResponseError, `expected a ResponseError 413, ${what}`)
    assert.equal(err.statusCode, 413, what)
    assert.equal(attempts, 0, `the client retried: ${what}`)
    assert.equal(sent, 1, `esgate_requests_total{route="connector_error",method="PUT"} did not grow by 1: ${what}`)
    const doc = await client.connector.get({ connector_id: id })
    assert.equal(doc.status, 'created')
  } finally {
    await client.close()
  }
})
