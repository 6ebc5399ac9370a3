// facto's message diagram: one lane per member, an arrow from each message's send to its
// receipt (paired by the id both traces carry), coloured by kind, with the epochs as bands.
// Members' clocks are never compared: each lane is in its member's order, and events are
// placed by a Lamport clock over the pairs, so every arrow points forward.
'use strict';

(() => {
  const POLL_MS = 500;
  const KEEP_PER_MEMBER = 2000;  // entries kept per member in the page
  const WINDOW = 60;             // Lamport steps shown at once
  const SVG = 'http://www.w3.org/2000/svg';
  const CLASS_COLOURS = {
    election: '#e8590c', heartbeat: '#adb5bd', work: '#1c7ed6', replication: '#7048e8', gather: '#a0522d',
  };
  const KIND_COLOURS = { vote: '#2f9e44', vote_denied: '#c92a2a', answer: '#2f9e44', coordinator: '#d6336c', ack: '#2f9e44' };
  const LEGENDS = {
    raft: [
      ['pre_vote_request', 'pre-vote: would you vote for me? (no term changes)'],
      ['vote_request', 'RequestVote: a candidate campaigns at a new term'],
      ['vote', 'a vote granted'], ['vote_denied', 'a vote refused'],
      ['heartbeat', "the leader's heartbeat"], ['heartbeat_ack', 'a follower answers it (check-quorum)'],
    ],
    bully: [
      ['election', 'ELECTION: sent to every higher id'], ['answer', 'ANSWER: a higher id is alive and takes over'],
      ['coordinator', 'COORDINATOR: the winner announces itself'], ['heartbeat', 'the coordinator is alive'],
    ],
    ring: [
      ['election', "the token's round: it names the highest candidate it has passed"],
      ['coordinator', "the winner's announcement, once round the ring"], ['ack', 'the successor got it'],
      ['heartbeat', 'the leader is alive'],
    ],
  };
  const WORK_LEGEND = [
    ['work', 'a batch of tasks to a worker'], ['checkpoint_write', 'checkpoint facts to a peer (replication)'],
    ['checkpoint_query', "a new coordinator gathers a peer's checkpoint"],
  ];

  const traces = new Map();  // member id -> entries, oldest first
  let algorithm = null;
  let paused = false;
  let back = 0;              // Lamport steps between the newest event and the window's end

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function colour(entry) {
    return KIND_COLOURS[entry.kind] || CLASS_COLOURS[entry.class] || '#495057';
  }

  async function poll() {
    if (!paused) {
      try {
        const since = [...traces].map(([id, es]) => `${id}:${es.length ? es[es.length - 1].seq : 0}`).join(',');
        const r = await fetch(`/cluster/trace?since=${since}`, { cache: 'no-store' });
        if (r.ok) take(await r.json());
      } catch (e) { /* the member may be down: the page's banner says so */ }
    }
    setTimeout(poll, POLL_MS);
  }

  function take(view) {
    if (algorithm !== view.algorithm) { algorithm = view.algorithm; legend(); }
    for (const m of view.members) {
      if (!traces.has(m.id)) traces.set(m.id, []);
      if (!m.page) continue;
      const es = traces.get(m.id);
      const newest = es.length ? es[es.length - 1].seq : 0;
      es.push(...m.page.entries.filter(e => e.seq > newest));
      if (es.length > KEEP_PER_MEMBER) es.splice(0, es.length - KEEP_PER_MEMBER);
    }
    draw();
  }

  // Lamport placement: a lane's events in its own order; a receipt after its send.
  function place(lanes) {
    const sends = new Set();
    lanes.forEach(l => l.events.forEach(e => { if (e.dir === 'sent') sends.add(e.msg); }));
    const sentAt = new Map();
    const pos = lanes.map(() => 0);
    const clock = lanes.map(() => 0);
    const placed = [];
    let left = lanes.reduce((n, l) => n + l.events.length, 0);
    while (left > 0) {
      let moved = false;
      lanes.forEach((lane, i) => {
        while (pos[i] < lane.events.length) {
          const e = lane.events[pos[i]];
          const s = sentAt.get(e.msg);
          if (e.dir === 'received' && s === undefined && sends.has(e.msg)) break;
          step(i, e, s);
          moved = true;
        }
      });
      if (!moved) {
        // Windows cut at different places: let the lane whose next event is oldest go on.
        const i = lanes.findIndex((l, j) => pos[j] < l.events.length);
        step(i, lanes[i].events[pos[i]], undefined);
      }
    }
    return placed;

    function step(i, e, s) {
      const x = Math.max(clock[i] + 1, s === undefined ? 0 : s + 1);
      if (e.dir === 'sent') sentAt.set(e.msg, x);
      clock[i] = x;
      placed.push({ e, lane: i, x });
      pos[i]++;
      left--;
    }
  }

  function draw() {
    const box = document.getElementById('diagram');
    if (!box) return;
    const heartbeats = document.getElementById('diagram-heartbeats').checked;
    const ids = [...traces.keys()].sort((a, b) => a - b);
    const lanes = ids.map(id => ({ id, events: traces.get(id).filter(e => heartbeats || e.class !== 'heartbeat') }));
    const placed = place(lanes);
    const newest = placed.reduce((m, p) => Math.max(m, p.x), 0);
    const backMax = Math.max(0, newest - WINDOW);
    back = Math.min(back, backMax);
    const slider = document.getElementById('diagram-scroll');
    slider.max = String(backMax);
    slider.value = String(backMax - back);
    const start = Math.max(0, newest - back - WINDOW);
    const end = start + WINDOW;
    const width = 900;
    const laneY = i => 30 + i * 44;
    const height = laneY(ids.length) + 10;
    const xOf = x => 70 + (x - start) * ((width - 90) / WINDOW);
    while (box.firstChild) box.removeChild(box.firstChild);
    box.setAttribute('viewBox', `0 0 ${width} ${height}`);
    bands(box, placed, start, end, xOf, height);
    ids.forEach((id, i) => {
      box.append(svg('line', { x1: 60, x2: width - 10, y1: laneY(i), y2: laneY(i), class: 'lane' }));
      box.append(svg('text', { x: 4, y: laneY(i) + 4, class: 'lane-label' }, `node ${id}`));
    });
    const at = new Map(placed.filter(p => p.e.dir === 'sent').map(p => [p.e.msg, p]));
    for (const p of placed) {
      if (p.e.dir !== 'received' || p.x < start || p.x > end) continue;
      const from = at.get(p.e.msg);
      const x1 = from ? xOf(Math.max(from.x, start)) : xOf(p.x) - 12;
      const y1 = from ? laneY(from.lane) : laneY(p.lane) - 14;
      const arrow = svg('line', {
        x1, y1, x2: xOf(p.x), y2: laneY(p.lane), stroke: colour(p.e), 'stroke-width': p.e.class === 'heartbeat' ? 1 : 2,
        'marker-end': 'url(#arrowhead)', class: 'arrow', 'data-kind': p.e.kind, 'data-class': p.e.class,
        'data-epoch': p.e.epoch,
      });
      arrow.append(svg('title', {}, `${p.e.kind}: node ${p.e.from} → node ${p.e.to}, epoch ${p.e.epoch}`));
      box.append(arrow);
    }
    defs(box);
    document.getElementById('diagram-position').textContent =
      back === 0 ? 'newest' : `${back} step${back === 1 ? '' : 's'} back`;
  }

  // The epochs as bands: where the highest epoch any event speaks for rises.
  function bands(box, placed, start, end, xOf, height) {
    let epoch = 0;
    let from = start;
    const cut = [];
    for (const p of [...placed].sort((a, b) => a.x - b.x)) {
      if (p.e.epoch > epoch) {
        if (p.x > start) cut.push([from, p.x, epoch]);
        epoch = p.e.epoch;
        from = Math.max(p.x, start);
      }
    }
    cut.push([from, end, epoch]);
    for (const [a, b, e] of cut.filter(([a, b]) => b > start && a < end)) {
      box.append(svg('rect', { x: xOf(a), y: 0, width: Math.max(0, xOf(b) - xOf(a)), height, class: `band band-${e % 2}` }));
      box.append(svg('text', { x: xOf(a) + 3, y: 12, class: 'band-label' }, `epoch ${e}`));
    }
  }

  function defs(box) {
    const d = svg('defs', {});
    const m = svg('marker', { id: 'arrowhead', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto' });
    m.append(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#495057' }));
    d.append(m);
    box.prepend(d);
  }

  function legend() {
    const list = document.getElementById('diagram-legend');
    while (list.firstChild) list.removeChild(list.firstChild);
    for (const [kind, what] of [...(LEGENDS[algorithm] || []), ...WORK_LEGEND]) {
      const cls = ['work', 'checkpoint_write', 'checkpoint_query'].includes(kind)
        ? { work: 'work', checkpoint_write: 'replication', checkpoint_query: 'gather' }[kind]
        : (kind.startsWith('heartbeat') ? 'heartbeat' : 'election');
      const swatch = svg('svg', { width: 24, height: 10, class: 'swatch' });
      swatch.append(svg('line', { x1: 0, y1: 5, x2: 24, y2: 5, stroke: colour({ kind, class: cls }), 'stroke-width': 3 }));
      const item = document.createElement('li');
      item.append(swatch, document.createTextNode(` ${kind}: ${what}`));
      list.append(item);
    }
    document.getElementById('diagram-algorithm').textContent = algorithm;
  }

  function control(id, action) {
    document.getElementById(id).addEventListener('click', () => { action(); draw(); });
  }

  document.addEventListener('DOMContentLoaded', () => {
    control('diagram-pause', () => {
      paused = !paused;
      document.getElementById('diagram-pause').textContent = paused ? 'resume' : 'pause';
    });
    control('diagram-back', () => { back += 1; });
    control('diagram-forward', () => { back = Math.max(0, back - 1); });
    control('diagram-newest', () => { back = 0; });
    document.getElementById('diagram-heartbeats').addEventListener('change', draw);
    const slider = document.getElementById('diagram-scroll');
    slider.addEventListener('input', () => { back = Number(slider.max) - Number(slider.value); draw(); });
    poll();
  });
})();
