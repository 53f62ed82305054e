// Supervisor wallboard: live queue figures and the agent grid from /ws/supervisor, with forced
// state changes. Times in state count up locally between updates.
'use strict';
const $ = (id) => document.getElementById(id);
let ws = null, nextId = 1, agents = [], retry = 500;
const monitoring = {};
function esc(s) { const d = document.createElement('div'); d.textContent = s == null ? '' : String(s); return d.innerHTML; }
function secs(ms) { if (ms == null) return '—'; const s = Math.round(ms / 1000); return s < 60 ? s + ' s' : Math.floor(s / 60) + ' m ' + (s % 60) + ' s'; }
function pct(x) { return x == null ? '—' : (x * 100).toFixed(1) + '%'; }

function renderQueues(queues) {
  const rows = queues.map((q) => {
    const by = q.agents_by_state || {};
    const other = Object.entries(by).filter(([k]) => k !== 'available' && k !== 'on_call').reduce((n, [, v]) => n + v, 0);
    return '<tr data-queue="' + esc(q.queue) + '"><td>' + esc(q.queue) + '</td><td class="big">' + q.waiting + '</td><td>' + secs(q.oldest_wait_ms) +
      '</td><td>' + secs(q.estimated_wait_ms) + '</td><td>' + pct(q.service_level) + '</td><td>' + secs(q.asa_ms) + '</td><td>' + pct(q.abandon_rate) +
      '</td><td>' + secs(q.aht_ms) + '</td><td>' + q.counters.queued + '</td><td>' + q.counters.answered + '</td><td>' + (by.available || 0) + ' / ' + (by.on_call || 0) + ' / ' + other + '</td></tr>';
  });
  document.querySelector('#queues tbody').innerHTML = rows.join('');
}

function renderCampaigns(campaigns) {
  $('campaigns-section').hidden = campaigns.length === 0;
  document.querySelector('#campaigns tbody').innerHTML = campaigns.map((c) =>
    '<tr data-campaign="' + esc(c.campaign) + '"><td>' + esc(c.campaign) + '</td><td>' + esc(c.state) + '</td><td>' + c.dials + '</td><td>' + c.answered_human +
    '</td><td>' + c.machines + '</td><td>' + c.connects + '</td><td>' + c.abandons + '</td><td>' + pct(c.abandon_rate) + '</td><td>' + c.dial_level.toFixed(2) +
    '</td><td>' + c.lines_active + '</td><td>' + c.leads_pending + '</td><td><button data-act="pause">Pause</button><button data-act="resume">Resume</button><button data-act="stop">Stop</button></td></tr>'
  ).join('');
}

$('campaigns').addEventListener('click', (e) => {
  const b = e.target.closest('button'); if (!b) return;
  const id = b.closest('tr').dataset.campaign;
  fetch('/api/v1/campaigns/' + encodeURIComponent(id) + '/' + b.dataset.act, { method: 'POST' })
    .then((r) => r.json()).then((j) => { $('error').textContent = j.message || ''; });
});

function renderAgents() {
  const now = Date.now();
  $('agents').innerHTML = agents.map((a) =>
    '<div class="card" data-agent="' + esc(a.agent) + '"><div><strong>' + esc(a.agent) + '</strong></div>' +
    '<span class="state ' + esc(a.state) + '">' + esc(a.state.replace('_', ' ')) + (a.reason ? ' (' + esc(a.reason) + ')' : '') + '</span>' +
    ' <span class="muted">' + secs(now - a.since) + '</span><div class="muted">handled ' + a.handled + (a.occupancy != null ? ' · occupancy ' + pct(a.occupancy) : '') + '</div>' +
    '<div class="row"><button data-act="ready">Ready</button><button data-act="not_ready">Not ready</button><button data-act="logout">Log out</button></div>' +
    (a.state === 'on_call' ? '<div class="row"><button data-act="listen">Listen</button><button data-act="whisper">Whisper</button><button data-act="barge">Barge</button><button data-act="monitor_stop">Leave</button></div>' : '') +
    '</div>'
  ).join('');
}

function send(frame) { frame.id = nextId++; ws.send(JSON.stringify(frame)); }

$('agents').addEventListener('click', (e) => {
  const b = e.target.closest('button'); if (!b) return;
  const agent = b.closest('.card').dataset.agent;
  const act = b.dataset.act;
  if (act === 'logout') send({ type: 'logout_agent', agent });
  else if (act === 'monitor_stop') { send({ type: 'monitor_stop', agent }); delete monitoring[agent]; }
  else if (['listen', 'whisper', 'barge'].includes(act)) {
    // Your SIP phone (registered as your user) rings for the first; then the mode changes.
    send({ type: monitoring[agent] ? 'monitor_mode' : 'monitor', agent, mode: act });
    monitoring[agent] = true;
  }
  else send({ type: 'force_state', agent, state: act, reason: act === 'not_ready' ? 'supervisor' : undefined });
});

function connect() {
  ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws/supervisor');
  ws.onopen = () => { $('link').textContent = 'live'; retry = 500; };
  ws.onmessage = (e) => {
    const f = JSON.parse(e.data);
    if (f.type === 'welcome') $('who').textContent = f.user.name;
    else if (f.type === 'stats') { renderQueues(f.queues); agents = f.agents; renderAgents(); $('updated').textContent = 'updated ' + new Date(f.at).toLocaleTimeString(); }
    else if (f.type === 'campaigns') renderCampaigns(f.campaigns);
    else if (f.type === 'error') { $('error').textContent = f.message; if (f.code === 'session_expired') location.href = '/?next=/wallboard'; }
    else if (f.type === 'ack') $('error').textContent = '';
  };
  ws.onclose = () => { $('link').textContent = 'offline'; setTimeout(connect, retry); retry = Math.min(retry * 2, 5000); };
}

fetch('/api/v1/me').then((r) => {
  if (r.status === 401) { location.href = '/?next=/wallboard'; return; }
  connect();
  setInterval(renderAgents, 1000);
});
