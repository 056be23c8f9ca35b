// A minimal sender on BullMQ, the peer of chatq's worker in chatq bench:
// each job is a text message that a Worker POSTs to ChatArchitect (the
// sandbox chatq bench started) with Basic auth, storing the provider's
// message id in a Redis hash. Nothing else: no record, no status, no
// limits, no policy. Runs in two phases, so that chatq bench can count
// Redis's commands for the sending alone:
//
// node send.mjs --port 6380 --phase add --jobs 20000
// node send.mjs --port 6380 --phase send --jobs 20000 --concurrency 50
//   --upstream http://127.0.0.1:8090 --app-id ID --app-secret SECRET
//
// Each phase prints one JSON line; send's has its seconds, from the
// Worker's start to the last job's end, and its CPU milliseconds over that
// time.
import { parseArgs } from 'node:util';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    phase: { type: 'string' },
    jobs: { type: 'string' },
    concurrency: { type: 'string', default: '50' },
    upstream: { type: 'string' },
    'app-id': { type: 'string' },
    'app-secret': { type: 'string' },
  },
});

function positive(name) {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n <= 0) {
    throw new Error(`--${name} must be a positive integer, not ${JSON.stringify(values[name])}`);
  }
  return n;
}

const port = positive('port');
const jobs = positive('jobs');
const clients = [];
const redis = () => {
  const c = new Redis({ host: values.host, port, maxRetriesPerRequest: null });
  clients.push(c);
  return c;
};
const name = 'chatq-bench-send';
const closeAll = () => Promise.all(clients.map((c) => c.quit()));

if (values.phase === 'add') {
  // The same about-100-character notification chatq bench sends, each to
  // a number of its own. A new run's provider ids start from none.
  const conn = redis();
  await conn.del('bench:sent');
  const queue = new Queue(name, { connection: conn });
  for (let from = 0; from < jobs; from += 1000) {
    const list = [];
    for (let i = from; i < Math.min(from + 1000, jobs); i++) {
      const n = String(i % 10_000_000).padStart(7, '0');
      list.push({
        name: 'send',
        data: {
          destination: `48${String(i).padStart(10, '0')}9`,
          text: `Hi Maria, your order ${n} has shipped and arrives on Thursday. Track it at https://ex.am/t/${n}`,
        },
        opts: { removeOnComplete: true, removeOnFail: true },
      });
    }
    await queue.addBulk(list);
  }
  await queue.close();
  await closeAll();
  console.log(JSON.stringify({ jobs }));
} else if (values.phase === 'send') {
  const concurrency = positive('concurrency');
  for (const k of ['upstream', 'app-id', 'app-secret']) {
    if (!values[k]) {
      throw new Error(`--${k} is required with --phase send`);
    }
  }
  const url = `${values.upstream}/whatsappmessage`;
  const auth = 'Basic ' + Buffer.from(`${values['app-id']}:${values['app-secret']}`).toString('base64');
  const store = redis();
  let done = 0;
  let failed = 0;
  let lastEnd = 0;
  let finished;
  const allDone = new Promise((resolve) => {
    finished = resolve;
  });
  const cpuStart = process.cpuUsage();
  const start = performance.now();
  const worker = new Worker(
    name,
    async (job) => {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: auth },
        body: JSON.stringify({
          channel: 'whatsapp',
          destination: job.data.destination,
          payload: { type: 'text', message: job.data.text },
        }),
      });
      const answer = await res.json();
      if (res.status !== 200 || !answer.messageId) {
        throw new Error(`send: status ${res.status}: ${JSON.stringify(answer)}`);
      }
      await store.hset('bench:sent', job.id, answer.messageId);
    },
    { connection: redis(), concurrency },
  );
  const count = () => {
    lastEnd = performance.now();
    if (++done === jobs) {
      finished();
    }
  };
  worker.on('completed', count);
  worker.on('failed', (_, err) => {
    failed++;
    console.error(`bullmq sender: ${err.message}`);
    count();
  });
  worker.on('error', (err) => {
    console.error(`bullmq worker: ${err.message}`);
  });
  await allDone;
  const cpu = process.cpuUsage(cpuStart);
  const seconds = (lastEnd - start) / 1000;
  await worker.close();
  const stored = await store.hlen('bench:sent');
  await closeAll();
  console.log(JSON.stringify({ jobs, failed, stored, send_seconds: seconds, cpu_ms: (cpu.user + cpu.system) / 1000 }));
} else {
  throw new Error(`--phase must be add or send, not ${JSON.stringify(values.phase)}`);
}
