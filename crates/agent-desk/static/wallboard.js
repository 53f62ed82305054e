// Supervisor wallboard: queue tiles coloured by the thresholds of [desk.wallboard] with an alert
// list, one compact tile per agent (name, state, time in state, call length; ringing, held and
// wrap-up apart), charts of the day so far, and actions on the selected agent (ready, not ready,
// not ready after the call, log out, and listen / whisper / barge from the browser over WebRTC).
// A tile also says when the router holds calls back from the agent after a failed offer (counting
// down to the router's end time) and when a logged-in agent cannot be reached by a call.
// Live figures come from /ws/supervisor; the day's totals and charts from the CRM
// (/api/v1/reports/today), so they survive a restart and say what period they cover.
'use strict';
const { $, esc, dur, pct, num, period, tzMinutes, api, timeAxis, countScale, reason: reasonText } = Sup;
let ws = null, nextId = 1, retry = 500;
let queues = [], agents = [], live = {}, today = null, config = null, selected = null, lastCounters = '';
const pending = {};
let mon = null; // { agent, pc, stream }
const STATES = ['available', 'not_ready', 'reserved', 'on_call', 'held', 'wrap_up', 'logged_out'];
const COLORS = { available: '#1a7f37', not_ready: '#c62828', reserved: '#e0a800', on_call: '#1f5eff', wrap_up: '#6b2fb3' };
window.wallboard = { get alerts() { return alertsNow(); }, get today() { return today; }, get agents() { return agents; }, get live() { return live; } };

function thresholds(queue) {
  const c = (config && config.wallboard) || { thresholds: { service_level_min: 0.8, oldest_wait_max_secs: 60, abandon_rate_max: 0.05 }, queues: {} };
  return Object.assign({}, c.thresholds, c.queues[queue] || {});
}
function dayRow(queue) { return today ? (today.queues || []).find((r) => r.queue === queue) : null; }

// Which figures of a queue break its thresholds: 'sl', 'wait', 'abandon', 'nobody'.
function breaches(q) {
  const t = thresholds(q.queue), d = dayRow(q.queue), out = [];
  const sl = d ? d.service_level : q.service_level;
  const ab = d ? d.abandon_rate : q.abandon_rate;
  if (sl != null && sl < t.service_level_min) out.push('sl');
  if (q.oldest_wait_ms != null && q.oldest_wait_ms > t.oldest_wait_max_secs * 1000) out.push('wait');
  if (ab != null && ab > t.abandon_rate_max) out.push('abandon');
  const by = q.agents_by_state || {};
  if (q.waiting > 0 && !(by.available > 0) && !(by.on_call > 0) && !(by.reserved > 0) && !(by.wrap_up > 0)) out.push('nobody');
  return out;
}
function alertsNow() {
  const out = [];
  for (const q of queues) {
    const t = thresholds(q.queue), d = dayRow(q.queue);
    for (const b of breaches(q)) {
      if (b === 'sl') out.push(I18n.t('alert.sl', { queue: q.queue, value: pct(d ? d.service_level : q.service_level), target: pct(t.service_level_min) }));
      if (b === 'wait') out.push(I18n.t('alert.wait', { queue: q.queue, value: dur(q.oldest_wait_ms), limit: dur(t.oldest_wait_max_secs * 1000) }));
      if (b === 'abandon') out.push(I18n.t('alert.abandon', { queue: q.queue, value: pct(d ? d.abandon_rate : q.abandon_rate), limit: pct(t.abandon_rate_max) }));
      if (b === 'nobody') out.push(I18n.t('alert.nobody', { queue: q.queue, waiting: q.waiting }));
    }
  }
  return out;
}

function fig(label, value, bad) { return '<div' + (bad ? ' class="bad"' : '') + '><b>' + value + '</b>' + esc(label) + '</div>'; }
function renderQueues() {
  $('queues').innerHTML = queues.map((q) => {
    const b = breaches(q), d = dayRow(q.queue) || {};
    const by = q.agents_by_state || {};
    return '<div class="qtile' + (b.length ? ' alert' : '') + '" data-queue="' + esc(q.queue) + '"><h3><span>' + esc(q.queue) + '</span><span class="muted">' +
      esc(I18n.t('queue.agents', { available: by.available || 0, busy: (by.on_call || 0) + (by.reserved || 0) + (by.wrap_up || 0) })) + '</span></h3><div class="figs">' +
      fig(I18n.t('queue.waiting'), q.waiting, b.includes('nobody')) + fig(I18n.t('queue.oldest'), dur(q.oldest_wait_ms), b.includes('wait')) + fig(I18n.t('queue.ewt'), dur(q.estimated_wait_ms)) +
      fig(I18n.t('queue.service_level'), pct(d.service_level), b.includes('sl')) + fig(I18n.t('queue.asa'), dur(d.asa_ms)) + fig(I18n.t('queue.abandon_rate'), pct(d.abandon_rate), b.includes('abandon')) +
      fig(I18n.t('queue.offered'), num(d.offered || 0)) + fig(I18n.t('queue.answered'), num(d.answered || 0)) + fig(I18n.t('queue.aht'), dur(d.aht_ms)) +
      '</div></div>';
  }).join('');
  const alerts = alertsNow();
  $('alerts').dataset.none = I18n.t('alerts.none');
  $('alerts').innerHTML = alerts.map((a) => '<li>' + esc(a) + '</li>').join('');
  if (today) $('queues-period').textContent = I18n.t('queues.period', { period: period(today.period) });
}

function shownState(a) {
  const l = live[a.agent] || {};
  return a.state === 'on_call' && l.call_phase === 'held' ? 'held' : a.state;
}
function renderAgents() {
  const now = Date.now();
  $('agent-count').textContent = I18n.t('agents.count', { n: agents.filter((a) => a.state !== 'logged_out').length, total: agents.length });
  $('agents').innerHTML = agents.map((a) => {
    const l = live[a.agent] || {}, st = shownState(a);
    // An agent the router has not seen since it started has no time in state (since is 0).
    const inState = a.since > 0 ? now - a.since : null;
    let call = '';
    if (a.state === 'on_call') call = '<span>' + esc(I18n.t('agent.call')) + ' <span class="t">' + dur(inState) + '</span></span>';
    if (st === 'held' && l.phase_since) call += '<span>' + esc(I18n.t('agent.held_for')) + ' <span class="t">' + dur(now - l.phase_since) + '</span></span>';
    const reason = a.reason ? ' · ' + esc(reasonText(a.reason)) : '';
    // Calls the router keeps from the agent after a failed offer, counting down to the last end.
    const held = (a.held_back || []).filter((h) => h.until > now);
    const last = held.reduce((m, h) => Math.max(m, h.until), 0);
    const heldLine = held.length ? '<div class="line held-back" title="' + esc(I18n.t('agent.held_back_title')) + '"><span>' +
      esc(held.length === 1 ? I18n.t('agent.held_back_one') : I18n.t('agent.held_back_many', { n: held.length })) +
      '</span><span class="t">' + dur(last - now) + '</span></div>' : '';
    // A logged-in agent a call could not reach now (no registered phone, softphone off).
    // In the third line, empty unless on a call, so the tile keeps its height on a full wall.
    const unreach = l.unreachable ? '<span class="unreachable" title="' + esc(I18n.t('agent.unreachable_title.' + l.unreachable)) + '">' +
      esc(I18n.t('agent.unreachable.' + l.unreachable)) + '</span>' : '';
    return '<div class="atile ' + st + (selected === a.agent ? ' selected' : '') + (l.unreachable ? ' unreachable' : '') + '" data-agent="' + esc(a.agent) + '" data-state="' + st + '">' +
      '<div class="name">' + esc(l.name || a.agent) + (l.name && l.name !== a.agent ? '<span class="id">' + esc(a.agent) + '</span>' : '') + '</div>' +
      '<div class="line"><span>' + esc(I18n.t('state.' + st)) + reason + '</span><span class="t">' + (inState === null ? '—' : dur(inState)) + '</span></div>' +
      '<div class="line">' + call + unreach + (l.not_ready_after_call ? '<span class="flag" title="' + esc(I18n.t('agent.after_call_flag')) + '">⏸</span>' : '') + '</div>' +
      heldLine + '</div>';
  }).join('');
  renderActions();
}
let actionsKey = null;
function renderActions() {
  const a = agents.find((x) => x.agent === selected);
  // Redrawn only when something it shows changed, so a click on a button is never lost to a redraw.
  const key = JSON.stringify([selected, a && a.state, a && (live[a.agent] || {}).name, !!mon, mon && mon.agent]);
  if (key === actionsKey) return;
  actionsKey = key;
  if (!a) { $('actions').innerHTML = '<span class="muted">' + esc(I18n.t('actions.pick')) + '</span>'; return; }
  const l = live[a.agent] || {};
  const acts = ['ready', 'not_ready', 'not_ready_after_call', 'logout'];
  if (a.state === 'on_call') acts.push('listen', 'whisper', 'barge');
  if (mon && mon.agent === a.agent) acts.push('monitor_stop');
  $('actions').innerHTML = '<strong>' + esc(l.name || a.agent) + '</strong>' + acts.map((k) => '<button data-act="' + k + '">' + esc(I18n.t('action.' + k)) + '</button>').join('');
}

function renderCampaigns(campaigns) {
  $('campaigns-section').hidden = campaigns.length === 0;
  document.querySelector('#campaigns tbody').innerHTML = campaigns.map((c) =>
    '<tr data-campaign="' + esc(c.campaign) + '"><td>' + esc(c.campaign) + '</td><td>' + esc(c.state) + '</td><td class="n">' + c.dials + '</td><td class="n">' + c.answered_human +
    '</td><td class="n">' + c.machines + '</td><td class="n">' + c.connects + '</td><td class="n">' + c.abandons + '</td><td class="n">' + pct(c.abandon_rate) + '</td><td class="n">' + num(c.dial_level, 2) +
    '</td><td class="n">' + c.lines_active + '</td><td class="n">' + c.leads_pending + '</td><td><button data-act="pause">' + esc(I18n.t('campaigns.pause')) + '</button> <button data-act="resume">' + esc(I18n.t('campaigns.resume')) + '</button> <button data-act="stop">' + esc(I18n.t('campaigns.stop')) + '</button></td></tr>'
  ).join('');
}

// Charts of the day so far (uPlot).
const charts = {};
let xRange = [0, 1];
function chart(id, opts, data) {
  const el = $(id);
  const width = Math.max(300, el.clientWidth || 380);
  if (charts[id]) { charts[id].setData(data); if (Math.abs(charts[id].width - width) > 4) charts[id].setSize({ width, height: 170 }); return; }
  charts[id] = new uPlot(Object.assign({ width, height: 170, legend: { show: true } }, opts), data, el);
}
function renderCharts() {
  if (!today || typeof uPlot === 'undefined') return;
  $('charts-period').textContent = period(today.period);
  const byStart = {};
  for (const r of today.intervals) {
    const s = byStart[r.interval_start_ms] || (byStart[r.interval_start_ms] = { offered: 0, answered: 0, abandoned: 0, within: 0, wait: 0 });
    s.offered += r.offered; s.answered += r.answered; s.abandoned += r.abandoned; s.within += r.answered_within_threshold;
    s.wait += (r.asa_ms || 0) * r.answered;
  }
  const xs = Object.keys(byStart).map(Number).sort((a, b) => a - b);
  const t = xs.map((x) => x / 1000);
  const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.5, 40] }) : undefined;
  // The x axis is the day so far: midnight to the end of the current quarter hour.
  const x0 = today.period.from_ms / 1000;
  xRange = [x0, Math.max(x0 + 3600, Math.ceil(today.period.to_ms / 900000) * 900)];
  const xs_ = { x: { time: true, range: () => xRange } };
  const counts = Object.assign({ y: countScale() }, xs_);
  chart('chart-volume', { scales: counts, series: [{}, { label: I18n.t('series.offered'), stroke: '#1f5eff', fill: 'rgba(31,94,255,.25)', paths: bars }, { label: I18n.t('series.answered'), stroke: '#1a7f37', width: 2 }, { label: I18n.t('series.abandoned'), stroke: '#c62828', width: 2 }], axes: [timeAxis(), { label: I18n.t('axis.calls') }] },
    [t, xs.map((x) => byStart[x].offered), xs.map((x) => byStart[x].answered), xs.map((x) => byStart[x].abandoned)]);
  chart('chart-service', { series: [{}, { label: I18n.t('series.service_level'), stroke: '#1a7f37', width: 2, scale: '%', value: (u, v) => v == null ? '—' : v.toFixed(1) + '%' }, { label: I18n.t('series.asa'), stroke: '#b35900', width: 2, scale: 's', value: (u, v) => v == null ? '—' : v.toFixed(1) + ' s' }],
    scales: Object.assign({ '%': { range: [0, 100] }, s: countScale() }, xs_), axes: [timeAxis(), { scale: '%', label: '%' }, { scale: 's', side: 1, label: I18n.t('axis.seconds'), grid: { show: false } }] },
    [t, xs.map((x) => byStart[x].answered ? 100 * byStart[x].within / byStart[x].answered : null), xs.map((x) => byStart[x].answered ? byStart[x].wait / byStart[x].answered / 1000 : null)]);
  const st = today.states || [];
  chart('chart-states', { scales: counts, series: [{}].concat(['available', 'not_ready', 'reserved', 'on_call', 'wrap_up'].map((k) => ({ label: I18n.t('state.' + k), stroke: COLORS[k], width: 2 }))), axes: [timeAxis(), { label: I18n.t('axis.agents') }] },
    [st.map((r) => r.interval_start_ms / 1000)].concat(['available', 'not_ready', 'reserved', 'on_call', 'wrap_up'].map((k) => st.map((r) => r[k]))));
}

async function loadToday() {
  try { today = await api('/api/v1/reports/today?interval=15&tz=' + tzMinutes()); renderQueues(); renderCharts(); }
  catch (e) { $('error').textContent = e.message; }
}
let todayTimer = null;
// The CRM has a call's figures a moment after the ACD counted it: read the day again soon after the
// counters move, and once more a little later.
function refreshTodaySoon() {
  if (todayTimer) return;
  todayTimer = setTimeout(() => { todayTimer = null; loadToday(); setTimeout(loadToday, 4000); }, 1000);
}
async function loadLive() {
  try {
    const r = await api('/api/v1/agents/live');
    live = {}; for (const a of r.agents) live[a.agent] = a;
    renderAgents();
  } catch (e) { $('error').textContent = e.message; }
}

function send(frame) { frame.id = nextId++; ws.send(JSON.stringify(frame)); return frame.id; }

async function startMonitor(agent, mode) {
  if (mon && mon.agent === agent) { send({ type: 'monitor_mode', agent, mode }); return; }
  if (mon) stopMonitor();
  const pc = new RTCPeerConnection({ iceServers: [] });
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  stream.getTracks().forEach((t) => pc.addTrack(t, stream));
  pc.ontrack = (e) => { $('monitor-audio').srcObject = e.streams[0]; };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    setTimeout(resolve, 2000);
  });
  mon = { agent, pc, stream };
  const id = send({ type: 'monitor', agent, mode, sdp: pc.localDescription.sdp });
  pending[id] = (f) => { if (f.type === 'monitor_answer') pc.setRemoteDescription({ type: 'answer', sdp: f.sdp }); };
  renderActions();
}
function stopMonitor() {
  if (!mon) return;
  send({ type: 'monitor_stop', agent: mon.agent });
  mon.pc.close(); mon.stream.getTracks().forEach((t) => t.stop()); mon = null;
  renderActions();
}
window.wallboard.monitor = () => (mon ? { agent: mon.agent, state: mon.pc.connectionState } : null);

$('agents').addEventListener('click', (e) => {
  const tile = e.target.closest('.atile'); if (!tile) return;
  selected = tile.dataset.agent === selected ? null : tile.dataset.agent;
  renderAgents();
});
$('actions').addEventListener('click', async (e) => {
  const b = e.target.closest('button'); if (!b || !selected) return;
  const agent = selected, act = b.dataset.act;
  $('error').textContent = '';
  try {
    if (act === 'logout') send({ type: 'logout_agent', agent });
    else if (act === 'ready' || act === 'not_ready') send({ type: 'force_state', agent, state: act, reason: act === 'not_ready' ? 'supervisor' : undefined });
    else if (act === 'not_ready_after_call') {
      const r = await api('/api/v1/agents/' + encodeURIComponent(agent) + '/not-ready-after-call', { method: 'POST', json: { reason: 'supervisor' } });
      $('error').textContent = I18n.t(r.when === 'now' ? 'actions.not_ready_now' : 'actions.not_ready_later');
      loadLive();
    } else if (act === 'monitor_stop') stopMonitor();
    else await startMonitor(agent, act);
  } catch (err) { $('error').textContent = err.message; }
});
$('campaigns').addEventListener('click', async (e) => {
  const b = e.target.closest('button'); if (!b) return;
  const id = b.closest('tr').dataset.campaign;
  try { await api('/api/v1/campaigns/' + encodeURIComponent(id) + '/' + b.dataset.act, { method: 'POST' }); } catch (err) { $('error').textContent = err.message; }
});

function connect() {
  ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws/supervisor');
  ws.onopen = () => { $('link').textContent = I18n.t('link.live'); retry = 500; };
  ws.onmessage = (e) => {
    const f = JSON.parse(e.data);
    if (f.id != null && pending[f.id]) { pending[f.id](f); delete pending[f.id]; }
    if (f.type === 'welcome') $('who').textContent = f.user.name;
    else if (f.type === 'stats') {
      queues = f.queues;
      agents = f.agents;
      const counters = JSON.stringify(queues.map((q) => q.counters));
      if (counters !== lastCounters) { lastCounters = counters; refreshTodaySoon(); }
      renderQueues(); renderAgents();
      $('updated').textContent = I18n.t('updated', { time: new Date(f.at).toLocaleTimeString(I18n.lang) });
    } else if (f.type === 'campaigns') renderCampaigns(f.campaigns);
    else if (f.type === 'error') { $('error').textContent = I18n.t('error.' + f.code) === 'error.' + f.code ? f.message : I18n.t('error.' + f.code); if (f.code === 'session_expired') location.href = '/?next=/wallboard'; }
  };
  ws.onclose = () => { $('link').textContent = I18n.t('link.offline'); setTimeout(connect, retry); retry = Math.min(retry * 2, 5000); };
}

(async () => {
  await I18n.ready;
  Sup.nav('wallboard');
  $('legend').innerHTML = STATES.map((k) => '<span><i class="sw ' + k + '"></i>' + esc(I18n.t('state.' + k)) + '</span>').join('');
  try { config = await api('/api/v1/wallboard/config'); } catch (e) { return; }
  connect();
  loadToday(); loadLive();
  setInterval(renderAgents, 1000);
  setInterval(loadLive, 2000);
  setInterval(loadToday, 10000);
})();
