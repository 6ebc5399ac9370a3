// facto's live view: polls GET /cluster on the member that served the page and draws it.
// Everything shown goes through textContent (never innerHTML): whatever a member reports is
// displayed as text, never run.
'use strict';

const POLL_MS = 500;
const DIGITS_SHOWN = 60;
let last = null;        // the last /cluster answer
let submitted = null;   // the job submitted from this page: {id, n}
// The cluster key for the fault buttons: in this variable only (never in storage or the
// DOM), so it is gone when the page is closed or reloaded.
let faultKey = null;
const FAULTS = [['crash', 'crash'], ['stall', 'stall'], ['partition', 'partition']];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function ms(v) {
  if (v === null || v === undefined) return '–';
  return v < 1000 ? `${v} ms` : `${(v / 1000).toFixed(1)} s`;
}

function leaderOf(view) {
  const own = view.members.find(m => m.id === view.node);
  return own && own.status ? own.status.leader : null;
}

function coordinatorStatus(view) {
  const leader = leaderOf(view);
  const m = view.members.find(m => m.id === leader && m.status && m.status.role === 'coordinator');
  return m ? m.status : null;
}

function drawMembers(view) {
  const leader = leaderOf(view);
  const cards = view.members.map(m => {
    const s = m.status;
    const lead = s && m.id === leader && s.role === 'coordinator';
    const card = el('article', {
      class: `member${lead ? ' coordinator' : ''}${m.up ? '' : ' down'}`,
      'data-id': m.id, 'data-role': s ? s.role : 'down',
    });
    card.append(el('h3', {}, `node ${m.id}`, el('span', { class: `pill ${m.up ? 'up' : 'down'}` }, m.up ? 'up' : 'down')));
    card.append(el('p', { class: 'addr' }, m.address));
    const rows = [];
    if (s) {
      rows.push(['role', s.taking_over ? 'taking over' : s.role], ['epoch', s.epoch],
        ['last contact', s.role === 'coordinator' ? '–' : ms(s.last_leader_contact_ms)],
        ['operations', s.operations_computed], ['restarts', s.restarts]);
    }
    const dl = el('dl');
    for (const [k, v] of rows) dl.append(el('dt', {}, k), el('dd', {}, v));
    card.append(dl, faultButtons(m));
    return card;
  });
  document.getElementById('members').replaceChildren(...cards);
  const up = view.members.filter(m => m.up).length;
  document.getElementById('summary').textContent =
    `${up} of ${view.members.length} members up · coordinator: ${leader === null || leader === undefined ? 'none (election under way)' : 'node ' + leader} · this page is served by node ${view.node}`;
}

// Each card's fault buttons are kept across redraws (the cards are redrawn twice a second):
// a button replaced between press and release would lose the click.
const faultBoxes = new Map();

function faultButtons(m) {
  if (!faultBoxes.has(m.id)) {
    const box = el('div', { class: 'faults' });
    for (const [kind, label] of FAULTS) {
      box.append(el('button', { type: 'button', 'data-fault': kind, 'data-id': m.id }, label));
    }
    faultBoxes.set(m.id, box);
  }
  const box = faultBoxes.get(m.id);
  const why = !faultKey ? 'enter the cluster key above to use the fault buttons' : (!m.up ? `node ${m.id} is down` : null);
  for (const b of box.children) {
    b.disabled = why !== null;
    b.title = why || `${b.dataset.fault} node ${m.id}`;
  }
  return box;
}

function faultStatus(text, isError) {
  const p = document.getElementById('fault-status');
  p.textContent = text;
  p.className = isError ? 'error' : 'muted';
}

function keyStatus() {
  document.getElementById('heal-all').disabled = !faultKey;
  faultStatus(faultKey
    ? 'Fault buttons enabled. The key is kept in this page\'s memory only: reloading the page forgets it.'
    : 'Fault buttons are disabled until you enter the cluster key (kept in this page\'s memory only, never stored).');
}

// The serving member relays each fault to the target member's admin API (this page may
// only talk to the member that served it); both check the key.
async function fault(path, body) {
  const r = await fetch(`/cluster/faults/${path}`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', 'x-facto-key': faultKey },
    body: JSON.stringify(body || {}), cache: 'no-store',
  });
  const answer = await r.json().catch(() => ({}));
  if (r.status === 401) { faultKey = null; document.getElementById('heal-all').disabled = true; if (last) drawMembers(last); }
  if (!r.ok) throw new Error(answer.error || `HTTP ${r.status}`);
  return answer;
}

function faultSeconds() {
  const text = document.getElementById('fault-seconds').value.trim();
  if (!/^[1-9][0-9]{0,2}$/.test(text)) throw new Error(`'${text}' is not a number of seconds from 1 to 999`);
  return Number(text);
}

async function onFaultClick(event) {
  const b = event.target.closest('button[data-fault]');
  if (!b || b.disabled || !faultKey) return;
  const [kind, id] = [b.dataset.fault, b.dataset.id];
  try {
    const body = kind === 'crash' ? {} : { duration_ms: faultSeconds() * 1000 };
    await fault(`members/${encodeURIComponent(id)}/${kind}`, body);
    faultStatus(kind === 'crash' ? `node ${id} crashed` : `node ${id}: ${kind} for ${body.duration_ms / 1000} s`);
  } catch (e) {
    faultStatus(`node ${id}: ${kind} failed: ${e.message || e}`, true);
  }
}

async function onHealAll() {
  if (!faultKey) return;
  try {
    const answers = await fault('heal');
    const missed = answers.filter(a => !a.healed).map(a => `node ${a.node}`);
    faultStatus(missed.length ? `healed all but ${missed.join(', ')} (no answer)` : 'every member healed');
  } catch (e) {
    faultStatus(`heal failed: ${e.message || e}`, true);
  }
}

function onKey(event) {
  event.preventDefault();
  const input = document.getElementById('fault-key');
  faultKey = input.value || null;
  input.value = '';
  keyStatus();
  if (last) drawMembers(last);
}

function drawJobs(view) {
  const c = coordinatorStatus(view);
  const box = document.getElementById('jobs');
  if (!c || !c.jobs || c.jobs.length === 0) {
    box.replaceChildren(el('p', { class: 'muted' }, c ? 'no jobs yet' : 'no coordinator to ask'));
    return;
  }
  const rows = c.jobs.slice().reverse().map(j => {
    const pct = Math.round((j.progress || 0) * 100);
    const row = el('div', { class: 'job', id: `job-${j.id}`, 'data-state': j.state, 'data-n': j.n });
    row.append(el('div', { class: 'head' },
      el('strong', {}, `${j.n}!`), el('span', { class: 'muted' }, `job ${j.id}`), el('span', { class: 'state' }, j.state)));
    const bar = el('div', { class: 'bar', role: 'progressbar', 'aria-valuenow': pct, 'aria-valuemin': 0, 'aria-valuemax': 100 });
    const fill = el('div'); fill.style.width = `${pct}%`; bar.append(fill);
    row.append(bar);
    const workers = (j.workers && j.workers.length) ? j.workers.map(w => `node ${w}`).join(', ') : '–';
    row.append(el('div', { class: 'muted' },
      `${j.operations_done} / ${j.operations_total} operations · ${j.operations_in_flight} in flight · ` +
      `${j.operations_reexecuted} re-executed · working: ${workers} · time: ${ms(j.elapsed_ms)}`));
    return row;
  });
  box.replaceChildren(...rows);
}

function drawTimeline(view) {
  const own = view.members.find(m => m.id === view.node);
  const log = own && own.status && own.status.leadership_log ? own.status.leadership_log : [];
  const now = own && own.status ? own.status.uptime_ms : 0;
  const items = log.slice().reverse().map(c => el('li', {},
    `epoch ${c.epoch}: ${c.leader === null || c.leader === undefined ? 'no coordinator' : 'node ' + c.leader} — ${c.reason}` +
    `${c.took_ms !== null && c.took_ms !== undefined ? ` (took ${ms(c.took_ms)})` : ''} · ${ms(Math.max(0, now - c.at_ms))} ago`));
  document.getElementById('timeline').replaceChildren(...items);
}

function banner(error) {
  const b = document.getElementById('banner');
  if (!error) { b.hidden = true; return; }
  b.hidden = false;
  const others = last ? last.members.filter(m => m.id !== last.node) : [];
  const here = last ? `node ${last.node} (${location.host})` : location.host;
  b.replaceChildren(`This member, ${here}, is not answering (${error}). Other members' views: `);
  for (const m of others) b.append(el('a', { href: `http://${m.address}/` }, `node ${m.id}`));
}

async function poll() {
  try {
    const r = await fetch('/cluster', { cache: 'no-store' });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const view = await r.json();
    last = view;
    banner(null);
    drawMembers(view); drawJobs(view); drawTimeline(view);
  } catch (e) {
    banner(e.message || String(e));
  }
  setTimeout(poll, POLL_MS);
}

// A large result is not in the job's JSON: its ends are read from the digits stream with a
// Range, and the download link is the stream itself.
async function showResult(job) {
  const digits = job.result || '';
  document.getElementById('result').hidden = false;
  document.getElementById('result-title').textContent = `${job.n}! = (${job.digits ?? digits.length} digits)`;
  const shown = document.getElementById('result-digits');
  if (job.result) {
    shown.textContent = digits.length <= DIGITS_SHOWN ? digits : `${digits.slice(0, 25)}…${digits.slice(-25)}`;
  } else {
    shown.textContent = `${await digitRange(job, 'bytes=0-24')}…${await digitRange(job, 'bytes=-25')}`;
  }
  const a = document.getElementById('result-download');
  a.href = job.digits_url || URL.createObjectURL(new Blob([digits], { type: 'text/plain' }));
  a.download = `${job.n}-factorial.txt`;
}

async function digitRange(job, range) {
  try {
    const r = await fetch(job.digits_url, { headers: { Range: range }, cache: 'no-store' });
    return r.ok ? await r.text() : '';
  } catch (e) {
    return '';
  }
}

async function waitForResult(id) {
  while (submitted && submitted.id === id) {
    try {
      const r = await fetch(`/jobs/${encodeURIComponent(id)}?wait_ms=1000`, { cache: 'no-store' });
      if (r.ok) {
        const job = await r.json();
        if (job.state === 'done') return showResult(job);
      }
    } catch (e) { /* the member may be down: the banner says so; try again */ }
    await new Promise(res => setTimeout(res, POLL_MS));
  }
}

async function submit(event) {
  event.preventDefault();
  const error = document.getElementById('submit-error');
  error.hidden = true;
  const text = document.getElementById('n').value.trim();
  // Checked as `facto submit` checks it, with the same reason; the bound (--max-n) is the
  // cluster's, whose reason is shown as it comes. The number goes as typed: JavaScript
  // numbers would round a large one.
  if (!/^(0|[1-9][0-9]*)$/.test(text) || BigInt(text) > 18446744073709551615n) {
    error.textContent = `'${text}' is not a non-negative integer (digits only, no sign or leading zero)`;
    error.hidden = false;
    return;
  }
  try {
    const r = await fetch('/jobs', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: `{"n": ${text}}`,
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) { error.textContent = body.error || `HTTP ${r.status}`; error.hidden = false; return; }
    submitted = { id: body.id, n: body.n };
    document.getElementById('result').hidden = true;
    waitForResult(body.id);
  } catch (e) {
    error.textContent = `no answer: ${e.message || e}`; error.hidden = false;
  }
}

document.getElementById('submit-form').addEventListener('submit', submit);
document.getElementById('fault-form').addEventListener('submit', onKey);
document.getElementById('members').addEventListener('click', onFaultClick);
document.getElementById('heal-all').addEventListener('click', onHealAll);
keyStatus();
poll();
