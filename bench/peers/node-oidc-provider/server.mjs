// node-oidc-provider on 127.0.0.1:<port>, its tokens in PostgreSQL (adapter.mjs); one process.
//   NODE_ENV=production DATABASE_URL=postgres://... node server.mjs <port>
// No request log: neither the library nor Koa writes one. Errors the provider answers with
// 5xx go to stderr (the bench counts them as errors anyway).
import { createPool, postgresAdapter } from './adapter.mjs';
import { makeProvider } from './provider.mjs';

const port = Number(process.argv[2] || process.env.PORT);
const url = process.env.DATABASE_URL;
if (!port || !url) {
  console.error('usage: DATABASE_URL=postgres://... node server.mjs <port>');
  process.exit(2);
}
const pool = createPool(url, Number(process.env.PG_POOL_MAX) || undefined);
const provider = makeProvider(postgresAdapter(pool));
provider.on('server_error', (ctx, error) => console.error('server_error', error));
// Requests still being handled: a client that hung up (wrk stopping) does not stop the handler,
// and a rotation half done (consumed, its successor not yet saved) must not lose the pool.
let inFlight = 0;
provider.use(async (ctx, next) => {
  inFlight += 1;
  try {
    await next();
  } finally {
    inFlight -= 1;
  }
});
const server = provider.listen(port, '127.0.0.1');

function shutdown() {
  server.close();
  server.closeIdleConnections();
  const done = setInterval(() => {
    if (inFlight === 0) {
      clearInterval(done);
      pool.end().then(() => process.exit(0));
    }
  }, 20);
  setTimeout(() => process.exit(1), 10000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
