// The chat page: joins a room over the server's WebSocket (docs/protocol.md),
// shows history and live messages, and resumes after any disconnect with
// `since=<last seq shown>` so nothing is shown twice or skipped.
//
// Rules this file keeps:
// - Text from the network is only ever put in the page with textContent:
//   nothing anyone types is parsed as HTML.
// - The log holds at most MAX_ROWS rows; incoming messages are queued and
//   drawn once per animation frame, so a busy room cannot freeze the page.
// - The page sends one message at a time and waits for the server's answer
//   (its own message coming back, or an error frame) before the next, so
//   every answer belongs to exactly one message. Each message carries a
//   random clientId, kept across resends, and the server publishes a
//   clientId once per room: a message still waiting when the connection
//   drops is looked for in the history of the next welcome (found: it was
//   delivered) and otherwise simply sent again, which can never show it
//   twice, even if the first copy was still on its way.
// - With authentication on, the token comes from the URL fragment
//   (`#token=…`: never sent to the server with the page request) and is sent
//   on the upgrade as `?token=`. When the server closes at the token's expiry
//   (4001) the page reads the fragment again (an embedding app may have put
//   a fresh token there, or `hashchange` already did) and reconnects with
//   `since`.
'use strict';

(() => {
  /** Rows kept in the log; older ones are removed from the page. */
  const MAX_ROWS = 500;
  /** Rows drawn per animation frame at most (the rest wait a frame). */
  const ROWS_PER_FRAME = 100;
  /** The server's default MAX_CHAT_BYTES; longer messages are refused here. */
  const MAX_CHAT_BYTES = 4096;
  /** From this many bytes on, the composer shows a counter. */
  const COUNT_FROM_BYTES = 3500;
  /** Messages that may wait to be sent. */
  const MAX_OUTBOX = 50;
  /** Reconnect delay: BASE * 2^attempt, at most CAP, with jitter (half to all of it). */
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 15000;
  /** A connection that stayed up this long resets the backoff. */
  const STABLE_MS = 10000;
  /** No answer to a sent message for this long: the connection is replaced. */
  const ACK_TIMEOUT_MS = 15000;
  /** Automatic resends of a message refused as rate_limited or unavailable. */
  const MAX_AUTO_RETRIES = 5;
  /** How long an error notice stays up. */
  const NOTICE_MS = 8000;
  /** The close code this page uses when it replaces a connection itself. */
  const CLOSE_REPLACE = 4000;
  /** The server's close code at the token's `exp` (docs/protocol.md). */
  const CLOSE_TOKEN_EXPIRED = 4001;

  const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
  const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;

  /** What the page says for each error code of the protocol. */
  const ERROR_TEXT = {
    too_long: 'Message too long: the server refused it.',
    rate_limited: 'You are sending messages too fast; the server refused one.',
    unavailable: 'The server could not send your message right now.',
    bad_message: 'Empty messages are not sent.',
    bad_username: 'The server does not accept that name.',
    bad_json: 'The server did not understand a message from this page.',
    unknown_type: 'The server did not understand a message from this page.',
    unsupported: 'The server did not understand a message from this page.',
  };
  /** Refusals worth sending again after a pause. */
  const RETRYABLE = new Set(['rate_limited', 'unavailable']);

  const $ = (id) => document.getElementById(id);
  const el = {
    roomTitle: $('room-title'),
    status: $('status'),
    statusText: $('status-text'),
    statusCount: $('status-count'),
    retryNow: $('retry-now'),
    me: $('me'),
    meName: $('me-name'),
    change: $('change'),
    join: $('join'),
    joinForm: $('join-form'),
    joinName: $('join-name'),
    joinRoom: $('join-room'),
    joinError: $('join-error'),
    chat: $('chat'),
    trimmed: $('trimmed'),
    log: $('log'),
    jump: $('jump'),
    outbox: $('outbox'),
    notice: $('notice'),
    noticeText: $('notice-text'),
    noticeClose: $('notice-close'),
    composer: $('composer'),
    text: $('text'),
    count: $('count'),
    send: $('send'),
  };

  const encoder = new TextEncoder();
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

  function validRoom(room) {
    return ROOM_RE.test(room);
  }

  /** 1–32 printable characters, not only spaces (the server's rule). */
  function validName(name) {
    const chars = Array.from(name).length;
    return chars >= 1 && chars <= 32 && !CONTROL_RE.test(name) && name.trim() !== '';
  }

  // ---------------------------------------------------------------- join form

  function showJoin(name, room) {
    el.join.hidden = false;
    el.joinName.value = name ?? localStorage.getItem('chat.name') ?? '';
    el.joinRoom.value = room;
    if (name !== null && name !== '' && !validName(name)) {
      joinError('A name is 1 to 32 characters, without control characters.');
    } else if (!validRoom(room)) {
      joinError('A room name is 1 to 64 letters, digits, "_", "." or "-".');
    }
    (el.joinName.value ? el.joinRoom : el.joinName).focus();
    // The form's GET keeps the action's fragment: a token stays with the page.
    if (chat.token) el.joinForm.action = `/${location.hash}`;
    el.joinForm.addEventListener('submit', (ev) => {
      const n = el.joinName.value;
      const r = el.joinRoom.value.trim();
      el.joinRoom.value = r;
      if (!validName(n)) {
        ev.preventDefault();
        joinError('Pick a name of 1 to 32 characters.');
        el.joinName.focus();
      } else if (!validRoom(r)) {
        ev.preventDefault();
        joinError('A room name is 1 to 64 letters, digits, "_", "." or "-".');
        el.joinRoom.focus();
      }
      // Otherwise the form's GET loads /?name=…&room=…, which joins.
    });
  }

  function joinError(text) {
    el.joinError.textContent = text;
    el.joinError.hidden = false;
  }

  // ---------------------------------------------------------------- chat state

  const chat = {
    room: '',
    name: '',
    /** The open (or opening) socket; events of older sockets are ignored. */
    ws: null,
    /** Whether the current socket has had its welcome frame. */
    welcomed: false,
    /** The `since` the current socket was opened with (null: none). */
    since: null,
    /** Highest seq shown; the next connection resumes after it. */
    lastSeq: null,
    /** Failed attempts in a row (the backoff exponent). */
    attempt: 0,
    openedAt: 0,
    retryTimer: 0,
    countdownTimer: 0,
    retryAt: 0,
    ackTimer: 0,
    /** Messages typed here and not yet delivered, oldest first. */
    outbox: [],
    /** The outbox entry sent and not yet answered (at most one). */
    inflight: null,
    pod: null,
    /** The JWT from the fragment, or null without authentication. */
    token: null,
  };

  /** `#token=…` of the page's URL, or null. */
  function tokenFromFragment() {
    const t = new URLSearchParams(location.hash.slice(1)).get('token');
    return t ? t : null;
  }

  /**
   * A token's claims, read without verifying (the server verifies; the page
   * only shows the name and notices an expired token). Null if unreadable.
   */
  function tokenClaims(token) {
    try {
      const b64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const json = new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
      const claims = JSON.parse(json);
      return claims && typeof claims === 'object' ? claims : null;
    } catch {
      return null;
    }
  }

  /** The chat name a token gives (as the server derives it), or null. */
  function tokenName(token) {
    const c = tokenClaims(token);
    if (!c) return null;
    if (typeof c.name === 'string' && c.name) return c.name;
    return typeof c.sub === 'string' && c.sub ? Array.from(c.sub).slice(0, 32).join('') : null;
  }

  function startChat(room, name) {
    chat.room = room;
    chat.name = name;
    try {
      localStorage.setItem('chat.name', name);
    } catch {
      // Storage may be off; the name is only a convenience for the form.
    }
    document.title = `#${room} · chat`;
    el.roomTitle.textContent = room;
    el.meName.textContent = name;
    el.me.hidden = false;
    el.change.href = `/?${new URLSearchParams({ room })}`;
    el.chat.hidden = false;

    el.composer.addEventListener('submit', (ev) => {
      ev.preventDefault();
      submitText();
    });
    el.text.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        submitText();
      }
    });
    el.text.addEventListener('input', updateCount);
    el.retryNow.addEventListener('click', () => connect());
    el.noticeClose.addEventListener('click', hideNotice);
    el.jump.addEventListener('click', () => {
      el.log.scrollTop = el.log.scrollHeight;
      el.jump.hidden = true;
    });
    el.log.addEventListener('scroll', () => {
      if (atBottom()) {
        el.jump.hidden = true;
        unseen = 0;
      }
    }, { passive: true });
    window.addEventListener('online', () => {
      if (!chat.ws) connect();
    });
    window.addEventListener('hashchange', () => {
      const token = tokenFromFragment();
      if (token && token !== chat.token) {
        chat.token = token;
        // A fresh token: use it now if the page is waiting to reconnect.
        if (!chat.ws) connect();
      }
    });
    el.text.focus();
    connect();
  }

  // ---------------------------------------------------------------- connection

  function connect() {
    clearTimeout(chat.retryTimer);
    clearInterval(chat.countdownTimer);
    if (chat.ws) {
      const old = chat.ws;
      chat.ws = null;
      old.close();
    }
    setStatus('connecting', 'Connecting…');
    const q = new URLSearchParams({ room: chat.room, name: chat.name });
    chat.since = chat.lastSeq;
    if (chat.since !== null) q.set('since', String(chat.since));
    if (chat.token) {
      q.set('token', chat.token);
      const exp = tokenClaims(chat.token)?.exp;
      if (typeof exp === 'number' && exp * 1000 <= Date.now()) {
        notice('Your sign-in token has expired; open the page again with a fresh one.', 'error');
      }
    }
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}/ws?${q}`);
    } catch {
      scheduleReconnect();
      return;
    }
    chat.ws = ws;
    chat.welcomed = false;
    ws.addEventListener('message', (ev) => {
      if (ws === chat.ws) onFrame(ev.data);
    });
    ws.addEventListener('close', (ev) => {
      if (ws === chat.ws) onClose(ev);
    });
  }

  function onClose(ev) {
    chat.ws = null;
    clearTimeout(chat.ackTimer);
    if (chat.welcomed && Date.now() - chat.openedAt >= STABLE_MS) chat.attempt = 0;
    chat.welcomed = false;
    for (const x of chat.outbox) renderOutboxItem(x);
    if (ev.code === 1008) {
      notice('The server closed the connection: ' + (ev.reason || 'policy violation') + '.', 'error');
    }
    if (ev.code === CLOSE_TOKEN_EXPIRED) {
      // Expiry is expected, not a failure: take the fragment's (fresh) token and go on at once.
      chat.token = tokenFromFragment() ?? chat.token;
      chat.attempt = 0;
      console.info('chat: token expired; reconnecting with the current token');
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** chat.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    chat.attempt = Math.min(chat.attempt + 1, 16);
    chat.retryAt = Date.now() + delay;
    chat.retryTimer = setTimeout(connect, delay);
    setStatus('reconnecting', 'Reconnecting');
    el.retryNow.hidden = false;
    updateCountdown();
    chat.countdownTimer = setInterval(updateCountdown, 250);
  }

  function updateCountdown() {
    const left = Math.max(0, Math.ceil((chat.retryAt - Date.now()) / 1000));
    const text = ` in ${left} s`;
    if (el.statusCount.textContent !== text) el.statusCount.textContent = text;
  }

  function setStatus(state, text) {
    el.status.dataset.state = state;
    el.statusText.textContent = text;
    el.statusCount.textContent = '';
    el.retryNow.hidden = true;
    if (state !== 'reconnecting') clearInterval(chat.countdownTimer);
  }

  /** Drops the current socket and connects again at once (resuming). */
  function replaceConnection(why) {
    console.warn(`chat: reconnecting: ${why}`);
    const ws = chat.ws;
    chat.ws = null;
    clearTimeout(chat.ackTimer);
    chat.welcomed = false;
    if (ws) ws.close(CLOSE_REPLACE, why.slice(0, 100));
    scheduleReconnect();
  }

  // ---------------------------------------------------------------- frames

  function onFrame(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn('chat: a frame that is not JSON');
      return;
    }
    if (msg === null || typeof msg !== 'object') return;
    switch (msg.type) {
      case 'chat':
        if (!chat.welcomed) return;
        onChat(msg, false);
        break;
      case 'system':
        if (!chat.welcomed && 'lastSeq' in msg) onWelcome(msg);
        else if (typeof msg.message === 'string' && /shutting down/i.test(msg.message)) {
          // The drain notice; the close that follows starts the reconnect.
          addSystem('The server is shutting down; this page reconnects by itself.', '');
        } else if (typeof msg.message === 'string') addSystem(msg.message, '');
        break;
      case 'error':
        onError(msg);
        break;
      default:
        break;
    }
  }

  function onWelcome(msg) {
    chat.welcomed = true;
    chat.openedAt = Date.now();
    const pod = typeof msg.podName === 'string' ? msg.podName : 'unknown';
    setStatus('connected', `Connected to pod ${pod}`);
    if (chat.pod !== null && chat.pod !== pod) addSystem(`Now connected through pod ${pod}.`, '');
    chat.pod = pod;

    const lastSeq = Number.isSafeInteger(msg.lastSeq) ? msg.lastSeq : null;
    const history = Array.isArray(msg.history) ? msg.history : [];
    if (chat.since !== null && msg.recovered === false) {
      if (lastSeq !== null && chat.since > lastSeq) {
        // The room's numbering started again (a server without storage
        // restarted): what was shown stays, numbering restarts from here.
        addSystem('The room was restarted on the server: earlier messages are no longer stored there.', 'warn');
        chat.lastSeq = null;
      } else {
        addSystem('Some messages could not be recovered: the server no longer stores them.', 'warn');
      }
    }
    for (const m of history) onChat(m, true);
    if (lastSeq !== null && (chat.lastSeq === null || lastSeq > chat.lastSeq)) chat.lastSeq = lastSeq;

    // A message sent on the previous connection and not answered: the
    // history above would have shown it (and onChat acknowledged it). If not,
    // it is sent again with the same clientId: should the first copy still
    // be on its way, the server drops the second, and the first arrives live.
    const o = chat.inflight;
    if (o) {
      chat.inflight = null;
      o.status = 'queued';
    }
    for (const x of chat.outbox) renderOutboxItem(x);
    pump();
  }

  function onChat(m, fromHistory) {
    if (!Number.isSafeInteger(m.seq)) return;
    if (chat.lastSeq !== null && m.seq <= chat.lastSeq) return; // already shown
    if (!fromHistory && chat.lastSeq !== null && m.seq > chat.lastSeq + 1) {
      // The protocol promises no gaps on one connection; if one shows, ask
      // again from the last seq shown rather than skip anything.
      replaceConnection(`gap after seq ${chat.lastSeq}`);
      return;
    }
    chat.lastSeq = m.seq;
    queueRow({ kind: 'chat', m });
    const o = chat.inflight;
    if (o && m.clientId === o.cid) acknowledge(o);
  }

  function onError(msg) {
    const code = typeof msg.code === 'string' ? msg.code : '';
    const detail = typeof msg.message === 'string' ? msg.message : '';
    const text = ERROR_TEXT[code] ?? 'The server refused a message.';
    const o = chat.inflight;
    if (!o) {
      notice(`${text} (${detail || code})`, 'error');
      return;
    }
    chat.inflight = null;
    clearTimeout(chat.ackTimer);
    if (RETRYABLE.has(code) && o.retries < MAX_AUTO_RETRIES) {
      const wait = 1000 * 2 ** o.retries;
      o.retries += 1;
      o.status = 'queued';
      o.holdUntil = Date.now() + wait;
      notice(`${text} Sending it again in ${Math.round(wait / 1000)} s.`, 'warn');
      renderOutboxItem(o);
      setTimeout(pump, wait);
    } else {
      o.status = 'failed';
      o.reason = detail ? `${text} (${detail})` : text;
      notice(o.reason, 'error');
      renderOutboxItem(o);
    }
    pump();
  }

  // ---------------------------------------------------------------- sending

  function submitText() {
    const text = el.text.value;
    if (text.trim() === '') return;
    const bytes = encoder.encode(text).length;
    if (bytes > MAX_CHAT_BYTES) {
      notice(`Message too long: ${bytes} bytes, the limit is ${MAX_CHAT_BYTES}.`, 'error');
      return;
    }
    if (chat.outbox.length >= MAX_OUTBOX) {
      notice(`${MAX_OUTBOX} messages are already waiting to be sent; wait for the connection.`, 'error');
      return;
    }
    const o = { cid: newClientId(), text, status: 'queued', retries: 0, holdUntil: 0, reason: '', node: null };
    chat.outbox.push(o);
    renderOutboxItem(o);
    el.text.value = '';
    updateCount();
    pump();
  }

  /** Sends the oldest queued message if nothing is waiting for an answer. */
  function pump() {
    if (chat.inflight || !chat.ws || !chat.welcomed || chat.ws.readyState !== WebSocket.OPEN) return;
    const o = chat.outbox.find((x) => x.status === 'queued');
    if (!o) return;
    if (o.holdUntil > Date.now()) return; // a timer calls pump again
    o.status = 'sending';
    chat.inflight = o;
    chat.ws.send(JSON.stringify({ type: 'chat', message: o.text, clientId: o.cid }));
    clearTimeout(chat.ackTimer);
    chat.ackTimer = setTimeout(() => {
      if (chat.inflight === o) replaceConnection('no answer to a sent message');
    }, ACK_TIMEOUT_MS);
    renderOutboxItem(o);
  }

  /** 128 random bits as 32 hex digits (crypto.randomUUID needs https; this does not). */
  function newClientId() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function acknowledge(o) {
    chat.inflight = null;
    clearTimeout(chat.ackTimer);
    removeOutboxItem(o);
    pump();
  }

  function removeOutboxItem(o) {
    const i = chat.outbox.indexOf(o);
    if (i >= 0) chat.outbox.splice(i, 1);
    if (o.node) o.node.remove();
    o.node = null;
  }

  function retry(o) {
    o.status = 'queued';
    o.retries = 0;
    o.holdUntil = 0;
    renderOutboxItem(o);
    pump();
  }

  const OUT_STATE = {
    queued: 'waiting for the connection',
    sending: 'sending…',
    failed: 'not sent',
  };

  function renderOutboxItem(o) {
    if (!o.node) {
      o.node = document.createElement('li');
      el.outbox.appendChild(o.node);
    }
    const li = o.node;
    let state = OUT_STATE[o.status];
    if (o.status === 'sending' && !chat.ws) state = 'connection lost, checking…';
    if (o.status === 'queued' && chat.ws && chat.welcomed) state = 'queued';
    if (o.status === 'failed' && o.reason) state = `not sent: ${o.reason}`;
    li.className = `out ${o.status}`;
    li.replaceChildren();
    const text = document.createElement('p');
    text.className = 'text';
    text.textContent = o.text;
    const st = document.createElement('span');
    st.className = 'state';
    st.textContent = state;
    li.append(text, st);
    if (o.status !== 'sending') {
      const actions = document.createElement('span');
      actions.className = 'actions';
      if (o.status === 'failed') actions.append(button('Retry', () => retry(o)));
      actions.append(
        button('Discard', () => {
          removeOutboxItem(o);
          pump();
        }),
      );
      li.append(actions);
    }
  }

  function button(label, onClick) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'link';
    b.textContent = label;
    b.addEventListener('click', onClick);
    return b;
  }

  function updateCount() {
    const bytes = encoder.encode(el.text.value).length;
    const over = bytes > MAX_CHAT_BYTES;
    el.count.textContent = bytes >= COUNT_FROM_BYTES ? `${bytes}/${MAX_CHAT_BYTES}` : '';
    el.count.classList.toggle('over', over);
    el.text.setAttribute('aria-invalid', over ? 'true' : 'false');
    el.send.disabled = over;
  }

  // ---------------------------------------------------------------- notices

  let noticeTimer = 0;

  function notice(text, level) {
    el.noticeText.textContent = text;
    el.notice.classList.toggle('warn', level === 'warn');
    el.notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(hideNotice, NOTICE_MS);
  }

  function hideNotice() {
    el.notice.hidden = true;
  }

  // ---------------------------------------------------------------- the log

  /** Rows waiting for the next animation frame. */
  let queue = [];
  let scheduled = false;
  let unseen = 0;
  let trimmedRows = 0;

  function addSystem(text, level) {
    queueRow({ kind: 'sys', text, level, at: new Date() });
  }

  function queueRow(row) {
    queue.push(row);
    // Rows beyond what the log keeps would be removed right after being
    // drawn: drop them now (a hidden tab gets no animation frames).
    if (queue.length > 2 * MAX_ROWS) {
      const drop = queue.length - MAX_ROWS;
      queue = queue.slice(drop);
      trimmedRows += drop;
    }
    schedule();
  }

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    if (document.hidden) setTimeout(flush, 250);
    else requestAnimationFrame(flush);
  }

  function flush() {
    scheduled = false;
    if (queue.length > MAX_ROWS) {
      trimmedRows += queue.length - MAX_ROWS;
      queue = queue.slice(queue.length - MAX_ROWS);
    }
    // At most ROWS_PER_FRAME new rows per frame; the rest wait for the next.
    const rows = queue.length > ROWS_PER_FRAME ? queue.slice(0, ROWS_PER_FRAME) : queue;
    queue = queue.length > ROWS_PER_FRAME ? queue.slice(ROWS_PER_FRAME) : [];
    if (queue.length > 0) schedule();
    const stick = atBottom();
    const frag = document.createDocumentFragment();
    for (const row of rows) frag.appendChild(row.kind === 'chat' ? chatRow(row.m) : sysRow(row));
    el.log.appendChild(frag);

    const excess = el.log.childElementCount - MAX_ROWS;
    if (excess > 0) {
      const range = document.createRange();
      range.setStartBefore(el.log.firstElementChild);
      range.setEndAfter(el.log.children[excess - 1]);
      range.deleteContents();
      trimmedRows += excess;
    }
    if (trimmedRows > 0) {
      el.trimmed.textContent = `Showing the latest ${MAX_ROWS} messages; older ones are not kept on this page.`;
      el.trimmed.hidden = false;
    }
    if (stick) {
      el.log.scrollTop = el.log.scrollHeight;
      unseen = 0;
    } else {
      unseen += rows.length;
      el.jump.textContent = `${unseen} new message${unseen === 1 ? '' : 's'} below`;
      el.jump.hidden = false;
    }
  }

  function atBottom() {
    return el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 40;
  }

  function chatRow(m) {
    const li = document.createElement('li');
    const name = typeof m.username === 'string' ? m.username : '?';
    li.className = `msg c${colour(name)}${name === chat.name ? ' mine' : ''}`;
    li.dataset.seq = String(m.seq);

    const time = document.createElement('time');
    const at = new Date(m.timestamp);
    if (!Number.isNaN(at.getTime())) {
      time.dateTime = at.toISOString();
      time.textContent = timeFormat.format(at);
      time.title = fullFormat.format(at);
    }
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = name;
    who.title = name;
    const text = document.createElement('p');
    text.className = 'text';
    text.textContent = typeof m.message === 'string' ? m.message : '';
    const pod = document.createElement('span');
    pod.className = 'pod';
    pod.textContent = typeof m.podName === 'string' ? `via ${m.podName}` : '';
    li.append(time, who, text, pod);
    return li;
  }

  function sysRow(row) {
    const li = document.createElement('li');
    li.className = row.level ? `sys ${row.level}` : 'sys';
    li.textContent = `${timeFormat.format(row.at)} · ${row.text}`;
    return li;
  }

  /** A stable colour class (c0–c11) per name (djb2 hash). */
  function colour(name) {
    let h = 5381;
    for (let i = 0; i < name.length; i++) h = (Math.imul(h, 33) + name.charCodeAt(i)) | 0;
    return (h >>> 0) % 12;
  }

  // ---------------------------------------------------------------- start

  const params = new URLSearchParams(location.search);
  chat.token = tokenFromFragment();
  // With a token the server takes the name from it; the page shows that one.
  const wantedName = (chat.token && tokenName(chat.token)) || params.get('name');
  const wantedRoom = params.get('room') ?? 'lobby';

  if (wantedName !== null && validName(wantedName) && validRoom(wantedRoom)) {
    startChat(wantedRoom, wantedName);
  } else {
    showJoin(wantedName, wantedRoom);
  }
})();
