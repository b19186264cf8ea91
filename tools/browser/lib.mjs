// Helpers of the browser tests: server processes started (and always
// stopped) by PID, Chromium pages with watchers installed, a raw WebSocket
// client that runs inside a page, and bounded polling. Every wait has a limit.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

/** How long one wait may take unless a caller says otherwise. */
export const WAIT_MS = 15000;

// ---------------------------------------------------------------- servers

const children = new Set();

function killChildren() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}
process.on('exit', killChildren);
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    killChildren();
    process.exit(1);
  });
}

/** The settings run.sh gives every server (`NAME=value` words). */
function baseEnv() {
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  for (const word of (process.env.TEST_SERVER_ENV ?? '').split(/\s+/)) {
    const i = word.indexOf('=');
    if (i > 0) env[word.slice(0, i)] = word.slice(i + 1);
  }
  if (process.env.REDIS_URL) env.REDIS_URL = process.env.REDIS_URL;
  if (process.env.MONGO_URI) env.MONGO_URI = process.env.MONGO_URI;
  return env;
}

/** A free TCP port on 127.0.0.1 (bound, released; the caller binds it next). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A websocket-server process of the tests' own. */
export class TestServer {
  constructor(pod, port, env) {
    this.pod = pod;
    this.port = port;
    this.env = env;
    this.child = null;
    this.log = [];
  }

  /**
   * Starts `SERVER_BIN` with run.sh's settings plus `env` (replica mode when
   * run.sh gave REDIS_URL and MONGO_URI; `{ REDIS_URL: '', MONGO_URI: '' }`
   * for a single node) on `port` (0: a free one).
   */
  static async start(pod, { port = 0, env = {} } = {}) {
    const server = new TestServer(pod, port, env);
    await server.spawn();
    return server;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  spawn() {
    const env = { ...baseEnv(), BIND_ADDR: '127.0.0.1', PORT: String(this.port), POD_NAME: this.pod };
    for (const [k, v] of Object.entries(this.env)) {
      if (v === '') delete env[k];
      else env[k] = v;
    }
    const child = spawn(process.env.SERVER_BIN, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    children.add(child);
    child.on('exit', () => children.delete(child));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${this.pod} did not start: ${this.log.slice(-10).join('\n')}`));
      }, WAIT_MS);
      const onLine = (line) => {
        this.log.push(line);
        if (this.log.length > 2000) this.log.splice(0, 1000);
        const m = /listening on \S*:(\d+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          this.port = Number(m[1]);
          resolve();
        }
      };
      for (const stream of [child.stdout, child.stderr]) {
        let rest = '';
        stream.setEncoding('utf8');
        stream.on('data', (chunk) => {
          const lines = (rest + chunk).split('\n');
          rest = lines.pop();
          lines.forEach(onLine);
        });
      }
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${this.pod} exited (${code ?? signal}) before listening: ${this.log.slice(-10).join('\n')}`));
      });
    });
  }

  /** Sends `signal` and waits (bounded) for the process to exit. */
  async stop(signal = 'SIGTERM', limitMs = WAIT_MS) {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    const timer = sleep(limitMs).then(() => 'timeout');
    if ((await Promise.race([exited, timer])) === 'timeout') {
      child.kill('SIGKILL');
      await exited;
      throw new Error(`${this.pod} did not exit within ${limitMs} ms of ${signal}`);
    }
  }

  /** Starts the process again on the same port. */
  restart() {
    return this.spawn();
  }
}

// ---------------------------------------------------------------- browser

/** Chromium flags for this sandbox (root, closed network). */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Runs in every page before its own scripts: records CSP violations, the
 * status indicator's states, notices, a rAF loop's longest frame gap and
 * the longest task on the main thread.
 */
function installWatchers() {
  const t = { csp: [], states: [], notices: [], maxGap: 0, longestTask: 0 };
  window.__test = t;
  document.addEventListener('securitypolicyviolation', (e) => {
    t.csp.push(`${e.violatedDirective} ${e.blockedURI}`);
  });
  const attach = () => {
    const st = document.getElementById('status');
    if (st) {
      const text = () => `${document.getElementById('status-text').textContent}${document.getElementById('status-count').textContent}`;
      const rec = () => t.states.push({ state: st.dataset.state, text: text(), at: Date.now() });
      new MutationObserver(rec).observe(st, { attributes: true, attributeFilter: ['data-state'] });
    }
    const nt = document.getElementById('notice-text');
    if (nt) {
      new MutationObserver(() => t.notices.push(nt.textContent)).observe(nt, {
        childList: true,
        characterData: true,
        subtree: true,
      });
    }
  };
  // Deferred scripts run after readyState turns "interactive": attach first.
  document.addEventListener('readystatechange', () => {
    if (document.readyState === 'interactive') attach();
  });
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) t.longestTask = Math.max(t.longestTask, e.duration);
  }).observe({ type: 'longtask' });
  let last = 0;
  const frame = (now) => {
    if (last && now - last > t.maxGap) t.maxGap = now - last;
    last = now;
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

/** A page with watchers, whose errors are collected (`page.problems`). */
export async function newPage(context) {
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') page.problems.push(`console: ${m.text()}`);
  });
  await page.addInitScript(installWatchers);
  return page;
}

/** Opens the chat page for `room` as `name` and waits until it is connected. */
export async function openChat(context, baseUrl, room, name) {
  const page = await newPage(context);
  const q = new URLSearchParams({ room, name });
  await page.goto(`${baseUrl}/?${q}`, { timeout: WAIT_MS });
  await until(page, () => document.getElementById('status').dataset.state === 'connected', 'connected');
  return page;
}

/** Polls `fn` in the page until it returns a truthy value; returns it. */
export async function until(page, fn, what, arg = undefined, limitMs = WAIT_MS) {
  const deadline = Date.now() + limitMs;
  let last;
  for (;;) {
    last = await page.evaluate(fn, arg);
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${limitMs} ms waiting for: ${what}`);
    await sleep(50);
  }
}

/** The chat rows in the page's log. */
export function rows(page) {
  return page.$$eval('#log li.msg', (els) =>
    els.map((e) => ({
      seq: Number(e.dataset.seq),
      who: e.querySelector('.who').textContent,
      text: e.querySelector('.text').textContent,
      pod: e.querySelector('.pod').textContent,
      time: e.querySelector('time').textContent,
      mine: e.classList.contains('mine'),
    })),
  );
}

/** Types `text` into the composer and presses Enter. */
export async function type(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

// ---------------------------------------------------------------- raw client

/**
 * A plain WebSocket chat client running in a page of `baseUrl`'s origin (a
 * blank page of /health): it stands for other users, on any pod.
 */
export async function rawClient(context, baseUrl, room, name) {
  const page = await context.newPage();
  await page.goto(`${baseUrl}/health`, { timeout: WAIT_MS });
  await page.evaluate(
    ({ room, name, limitMs }) =>
      new Promise((resolve, reject) => {
        const q = new URLSearchParams({ room, name });
        const ws = new WebSocket(`ws://${location.host}/ws?${q}`);
        const raw = { ws, lastSeq: 0, chats: 0, listeners: new Set() };
        window.raw = raw;
        const timer = setTimeout(() => reject(new Error('no welcome')), limitMs);
        ws.onmessage = (e) => {
          const m = JSON.parse(e.data);
          if (m.type === 'system' && 'lastSeq' in m) {
            raw.lastSeq = m.lastSeq;
            clearTimeout(timer);
            resolve();
          }
          if (m.type === 'chat') {
            raw.lastSeq = m.seq;
            raw.chats += 1;
          }
          for (const f of raw.listeners) f(m);
        };
        ws.onclose = () => reject(new Error('closed before the welcome'));
      }),
    { room, name, limitMs: WAIT_MS },
  );
  return {
    page,
    /** The highest seq this client has seen. */
    lastSeq: () => page.evaluate(() => window.raw.lastSeq),
    /**
     * Sends each `{ username, message }` and waits for it to come back,
     * sending again after `unavailable`/`rate_limited` (as a careful client does).
     */
    sendReliably: (messages) =>
      page.evaluate(
        async ({ messages, limitMs }) => {
          const raw = window.raw;
          for (const m of messages) {
            const deadline = Date.now() + limitMs;
            for (;;) {
              if (Date.now() > deadline) throw new Error(`no echo for ${m.message}`);
              const answer = new Promise((resolve) => {
                const f = (frame) => {
                  const mine = frame.type === 'chat' && frame.username === m.username && frame.message === m.message;
                  if (mine || frame.type === 'error') {
                    raw.listeners.delete(f);
                    resolve(frame);
                  }
                };
                raw.listeners.add(f);
                setTimeout(() => {
                  raw.listeners.delete(f);
                  resolve({ type: 'timeout' });
                }, limitMs);
              });
              raw.ws.send(JSON.stringify({ type: 'chat', ...m }));
              const frame = await answer;
              if (frame.type === 'chat') break;
              if (frame.type === 'error' && !['unavailable', 'rate_limited'].includes(frame.code)) {
                throw new Error(`refused: ${frame.code} ${frame.message}`);
              }
              await new Promise((r) => setTimeout(r, 200));
            }
          }
          return raw.lastSeq;
        },
        { messages, limitMs: WAIT_MS },
      ),
    /** Sends all of `messages` as fast as the socket drains, in chunks. */
    flood: (messages, chunk = 100) =>
      page.evaluate(
        async ({ messages, chunk }) => {
          const ws = window.raw.ws;
          for (let i = 0; i < messages.length; i += chunk) {
            for (const m of messages.slice(i, i + chunk)) ws.send(JSON.stringify({ type: 'chat', ...m }));
            while (ws.bufferedAmount > 64 * 1024) await new Promise((r) => setTimeout(r, 5));
            await new Promise((r) => setTimeout(r, 15));
          }
        },
        { messages, chunk },
      ),
    close: () => page.close(),
  };
}
