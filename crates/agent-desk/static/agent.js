// Agent desktop: the CTI socket (/ws/agent), the screen pop, call controls, wrap-up, and the browser
// softphone (WebRTC: our SDP offer goes in "accept", the server's answer comes as "media_answer").
//
// What it promises the agent:
// - every wrap-up is a form of its own, tied to its call id: a new offer never replaces one, and
//   notes typed during a call go with that call (kept in the tab's storage until saved);
// - the state, call, hold and wrap-up times tick on screen; an offer rings (Web Audio) and raises a
//   browser notification; a missed offer says why the agent is now not ready;
// - after a failed, missed or rejected offer, the time until the router may offer that caller
//   again counts down (the router sends the moment; the page only counts);
// - a lost connection shows a banner and no stale state; a lost session goes to the login page.
// Every string comes from the `agent` catalog (I18n.t).
'use strict';
const $ = (id) => document.getElementById(id);
const t = (key, vars) => I18n.t(key, vars);
// A code from the server or the configuration, through the catalog when it has a label for it.
function label(prefix, code) {
  const key = prefix + String(code).replace(/ /g, '_');
  const s = I18n.t(key);
  return s === key ? String(code).replace(/[_-]/g, ' ') : s;
}

let ws = null, nextId = 1, pc = null, retry = 500, settings = null, stateView = null;
let preview = null;
// The call in front of the agent (offered, dialing, connected, held, consulting): at most one.
let active = null;
// Calls in wrap-up, each with its own form, by call id.
const wrapups = new Map();
const pending = new Map();
let missed = null;
// Calls the router holds back from this agent ({call, until}), and who called on recent offers.
let heldBack = [];
const callers = new Map();
// What the desktop shows, in one place (handy for support and for browser tests).
window.desk = {
  media: null, state: null, reason: null, call: null, phase: null, preview: null, wrapups: [],
  ringing: false, notified: 0, said: [], notice: null, banner: null, reachable: null, connected: false,
  heldBack: [],
};

function show(el, on) { el.classList.toggle('hidden', !on); }
function text(el, s) { el.textContent = s == null ? '' : String(s); }
function esc(s) { const d = document.createElement('div'); d.textContent = s == null ? '' : String(s); return d.innerHTML; }
// Screen readers hear state changes and offers; what is said together is read together.
let said = [], sayTimer = null;
function announce(s) {
  said.push(s);
  window.desk.said = window.desk.said.concat([s]).slice(-20);
  if (sayTimer) return;
  $('live').textContent = '';
  sayTimer = setTimeout(() => { $('live').textContent = said.join('. '); said = []; sayTimer = null; }, 50);
}
function clock(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const two = (n) => String(n).padStart(2, '0');
  return (h ? h + ':' + two(m) : m) + ':' + two(r);
}
function agentName(id) { return (settings && settings.agent_names && settings.agent_names[id]) || id || ''; }

// ---------------------------------------------------------------- requests and errors
function send(frame) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject({ code: 'offline' });
  const id = nextId++;
  frame.id = id;
  ws.send(JSON.stringify(frame));
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}
// A refusal in plain words: the catalog's sentence for the code, else the server's message.
function plain(e) {
  if (!e) return '';
  if (e.code) {
    const key = 'error.' + e.code;
    const s = I18n.t(key);
    if (s !== key) return s;
    return e.message || e.code;
  }
  return t('error.browser', { message: e.message || String(e) });
}
function showError(e) { const s = plain(e); text($('error'), s); if (s) announce(s); }
function act(frame) { text($('error'), ''); return send(frame).catch((e) => { showError(e); throw e; }).catch(() => {}); }

// ---------------------------------------------------------------- banners and notices
function setBanner(s) {
  window.desk.banner = s || null;
  text($('banner'), s);
  show($('banner'), !!s);
}
function setNotice(s) {
  window.desk.notice = s || null;
  text($('notice-text'), s);
  show($('notice'), !!s);
  if (s) announce(s);
}

// ---------------------------------------------------------------- agent state
function stateText(v) {
  if (!v) return t('state.unknown');
  return label('state.', v.state) + (v.reason ? ' (' + label('reason.', v.reason) + ')' : '');
}
function setState(v) {
  const before = stateView;
  stateView = v;
  window.desk.state = v ? v.state : null;
  window.desk.reason = v ? (v.reason || null) : null;
  window.desk.until = v ? (v.until || null) : null;
  const el = $('state');
  el.className = 'state ' + (v ? v.state : 'unknown');
  text(el, stateText(v));
  // An offer says itself (with the caller); other changes are announced here.
  if (v && v.state !== 'reserved' && (!before || before.state !== v.state || before.reason !== v.reason)) announce(t('announce.state', { state: stateText(v) }));
  if (v && v.state === 'not_ready' && missed && Date.now() - missed.at < 60000) {
    setNotice(t('notice.missed_not_ready', { caller: missed.caller, why: missed.why, state: stateText(v) }));
    missed = null;
  }
  $('btn-ready').disabled = !v || !(v.state === 'not_ready' || v.state === 'wrap_up');
  $('btn-not-ready').disabled = !v || v.state === 'logged_out';
  $('btn-login').disabled = !v || v.state !== 'logged_out';
  $('btn-logout').disabled = !v || v.state === 'logged_out';
  tick();
}
function setReachable(r) {
  window.desk.reachable = r ? r.ok : null;
  const bad = r && !r.ok;
  text($('reach'), bad ? label('reach.', r.reason) : '');
  show($('reach'), bad);
}
// ---------------------------------------------------------------- calls held back after a failed offer
function heldBackText(h, now) {
  // Rounded up, so the count reaches 0:00 when the call may be offered again.
  const time = clock(h.until - now + 999);
  const caller = callers.get(h.call);
  return caller ? t('held_back.caller', { caller, time }) : t('held_back.call', { time });
}
function setHeldBack(calls) {
  const now = Date.now();
  const fresh = calls.filter((c) => !heldBack.some((h) => h.call === c.call) && c.until > now);
  heldBack = calls;
  window.desk.heldBack = calls;
  for (const h of fresh) announce(heldBackText(h, now));
  tick();
}
function showHeldBack(now) {
  const live = heldBack.filter((h) => h.until > now);
  const el = $('held-back');
  el.innerHTML = live.map((h) => '<div>' + esc(heldBackText(h, now)) + '</div>').join('');
  show(el, live.length > 0);
}
function remember(pop) {
  callers.set(pop.call, pop.caller);
  // Only recent callers matter (a hold-back lasts seconds); keep the map small.
  if (callers.size > 50) callers.delete(callers.keys().next().value);
}

function fillReasons() {
  const sel = $('reason');
  sel.innerHTML = '';
  for (const r of (settings && settings.not_ready_reasons) || []) {
    const o = document.createElement('option');
    o.value = r; o.textContent = label('reason.', r);
    sel.appendChild(o);
  }
}

// ---------------------------------------------------------------- customer and IVR
function customerHtml(c) {
  const cu = c.customer;
  let h = '<h3>' + esc(cu.name) + ' <span class="tier tier-' + esc(cu.tier) + '">' + esc(label('tier.', cu.tier)) + '</span></h3>';
  h += '<div class="muted">' + esc(t('customer.account', { account: cu.account_number || '—' }));
  if (cu.account_manager) h += ' · ' + esc(t('customer.manager', { name: agentName(cu.account_manager) }));
  h += '</div>';
  if (c.recent && c.recent.length) {
    h += '<table class="history"><caption class="sr-only">' + esc(t('history.caption')) + '</caption><thead><tr>'
      + ['history.when', 'history.queue', 'history.agent', 'history.outcome', 'history.notes'].map((k) => '<th scope="col">' + esc(t(k)) + '</th>').join('')
      + '</tr></thead><tbody>';
    for (const i of c.recent) {
      const outcome = i.abandoned ? t('history.abandoned') : (i.disposition ? label('disposition.', i.disposition) : '—');
      h += '<tr><td>' + esc(i.arrived_at_ms ? I18n.dateTime(i.arrived_at_ms) : '') + '</td><td>' + esc(i.queue || '') + '</td><td>'
        + esc(agentName(i.agent)) + '</td><td>' + esc(outcome) + (i.survey_score ? ' · ' + esc(t('history.score', { score: i.survey_score })) : '')
        + '</td><td>' + esc(i.notes || '') + '</td></tr>';
    }
    h += '</tbody></table>';
  } else {
    h += '<p class="muted">' + esc(t('history.none')) + '</p>';
  }
  return h;
}
// An IVR value as words: objects become "label: value" lists, never raw JSON.
function valueText(v) {
  if (v == null) return '—';
  if (typeof v === 'boolean') return v ? t('value.yes') : t('value.no');
  if (Array.isArray(v)) return v.map(valueText).join(', ');
  if (typeof v === 'object') return Object.entries(v).map(([k, x]) => label('ivr.var.', k) + ': ' + valueText(x)).join('; ');
  return String(v);
}
function ivrHtml(ivr) {
  if (!ivr) return '';
  let h = '<h3>' + esc(t('ivr.title')) + '</h3><p>' + esc(t('ivr.path', { flow: ivr.flow, node: ivr.node, language: ivr.language })) + '</p>';
  const vars = Object.entries(ivr.variables || {});
  if (vars.length) {
    h += '<dl class="ivr-values">';
    for (const [k, v] of vars) h += '<dt>' + esc(label('ivr.var.', k)) + '</dt><dd>' + esc(valueText(v)) + '</dd>';
    h += '</dl>';
  }
  return h;
}

// ---------------------------------------------------------------- preview campaigns
function setPreview(p) {
  preview = p; window.desk.preview = p;
  show($('preview'), !!p);
  if (!p) return;
  text($('preview-campaign'), t('preview.campaign', { campaign: p.campaign }));
  text($('preview-name'), p.name || p.lead);
  text($('preview-number'), p.number);
  text($('preview-attempt'), (p.callback ? t('preview.callback') + ' · ' : '') + t('preview.attempt', { n: p.attempt }));
  $('preview-customer').innerHTML = p.customer ? customerHtml(p.customer) : '<p class="muted">' + esc(t('preview.no_customer')) + '</p>';
}

// ---------------------------------------------------------------- the call in front of the agent
function renderPop(pop) {
  text($('pop-caller'), pop.caller);
  text($('pop-queue'), pop.campaign ? t('call.campaign', { campaign: pop.campaign.campaign }) : (pop.direction === 'outbound' ? t('call.outbound') : pop.queue));
  text($('pop-wait'), pop.direction === 'outbound' ? '' : t('call.waited', { secs: Math.round(pop.waited_ms / 1000) }));
  text($('pop-why'), pop.explanation);
  $('pop-customer').innerHTML = pop.customer ? customerHtml(pop.customer) : '<p class="muted">' + esc(t('call.unknown_caller')) + '</p>';
  $('pop-ivr').innerHTML = ivrHtml(pop.ivr);
}
function notesKey(call) { return 'notes:' + call; }
function savedNotes(call) { try { return sessionStorage.getItem(notesKey(call)) || ''; } catch (_) { return ''; } }
function keepNotes(call, s) { try { if (s) sessionStorage.setItem(notesKey(call), s); else sessionStorage.removeItem(notesKey(call)); } catch (_) { /* private mode */ } }

function setActive(pop, phase, since) {
  remember(pop);
  const fresh = !active || active.call !== pop.call;
  if (fresh) {
    if (active) keepNotes(active.call, $('call-notes').value);
    active = { call: pop.call, pop, phase: null, since: since || Date.now(), talkSince: null, heldSince: null };
    renderPop(pop);
    $('call-notes').value = savedNotes(pop.call);
    $('btn-mute').setAttribute('aria-pressed', 'false');
    text($('btn-mute'), t('btn.mute'));
  }
  setPhase(phase, since);
}
function setPhase(p, since) {
  if (!active) return;
  const was = active.phase;
  active.phase = p;
  if ((p === 'connected' || p === 'held' || p === 'consulting') && !active.talkSince) active.talkSince = (was ? Date.now() : since) || Date.now();
  if (p === 'held' && was !== 'held') active.heldSince = Date.now();
  if (p !== 'held') active.heldSince = null;
  window.desk.call = active.call; window.desk.phase = p;
  const el = $('call-phase');
  el.className = 'state ' + ({ consulting: 'reserved', dialing: 'reserved', offered: 'reserved', connected: 'on_call', held: 'reserved' }[p] || '');
  text(el, label('phase.', p));
  show($('call'), true);
  show($('idle'), false);
  const browser = $('softphone').checked;
  $('btn-accept').disabled = p !== 'offered' || !browser;
  if (browser) $('btn-accept').removeAttribute('title'); else $('btn-accept').title = t('call.answer_on_phone');
  $('btn-reject').disabled = p !== 'offered';
  $('btn-hold').disabled = p !== 'connected';
  $('btn-mute').disabled = !(p === 'connected' || p === 'held');
  $('btn-unhold').disabled = p !== 'held';
  $('btn-hangup').disabled = !(p === 'connected' || p === 'held' || p === 'dialing');
  $('btn-transfer').disabled = p !== 'connected';
  $('btn-consult').disabled = p !== 'connected';
  $('btn-consult-complete').disabled = p !== 'consulting';
  $('btn-consult-cancel').disabled = p !== 'consulting';
  if (p === 'offered') startRinging(); else stopRinging();
  if (was && was !== p) announce(t('announce.phase', { phase: label('phase.', p) }));
  tick();
}
function clearActive() {
  if (active) keepNotes(active.call, $('call-notes').value);
  active = null;
  window.desk.call = null; window.desk.phase = null;
  stopRinging();
  show($('call'), false);
  show($('idle'), true);
  if (pc) { pc.close(); pc = null; }
}

// ---------------------------------------------------------------- wrap-up forms, one per call
function dispositionsFor(pop) {
  const by = (settings && settings.dispositions_by) || {};
  const own = (pop.campaign && by[pop.campaign.campaign]) || (pop.queue && by[pop.queue]);
  return own || (settings && settings.dispositions) || [];
}
function toWrapUp(pop, since) {
  const call = pop.call;
  if (active && active.call === call) {
    keepNotes(call, $('call-notes').value);
    active = null; window.desk.call = null; window.desk.phase = null;
    stopRinging(); show($('call'), false); show($('idle'), true);
    if (pc) { pc.close(); pc = null; }
  }
  if (wrapups.has(call)) return;
  const form = $('wrapup-template').content.firstElementChild.cloneNode(true);
  I18n.apply(form);
  form.dataset.call = call;
  const uid = 'wu-' + call.replace(/[^A-Za-z0-9_-]/g, '_');
  for (const [cls, field] of [['wu-disposition', 'disposition'], ['wu-callback-at', 'callback-at'], ['wu-notes', 'notes']]) {
    form.querySelector('.' + cls).id = uid + '-' + field;
  }
  form.querySelector('.wu-disposition-label').htmlFor = uid + '-disposition';
  form.querySelector('.wu-callback-label').htmlFor = uid + '-callback-at';
  form.querySelector('.wu-notes-label').htmlFor = uid + '-notes';
  form.setAttribute('aria-label', t('wrapup.form', { caller: pop.caller }));
  text(form.querySelector('.wu-caller'), pop.caller);
  text(form.querySelector('.wu-when'), pop.queue ? pop.queue : '');
  const sel = form.querySelector('.wu-disposition');
  for (const d of dispositionsFor(pop)) {
    const o = document.createElement('option'); o.value = d; o.textContent = label('disposition.', d); sel.appendChild(o);
  }
  if (pop.campaign) {
    const o = document.createElement('option'); o.value = 'dnc'; o.textContent = t('disposition.dnc'); sel.appendChild(o);
  }
  show(form.querySelector('.wu-campaign'), !!pop.campaign);
  const notes = form.querySelector('.wu-notes');
  notes.value = savedNotes(call);
  notes.addEventListener('input', () => keepNotes(call, notes.value));
  form.addEventListener('submit', (e) => { e.preventDefault(); saveWrapUp(call); });
  form.querySelector('.wu-extend').addEventListener('click', (e) => extendWrapUp(e.currentTarget));
  $('wrapup-list').prepend(form);
  wrapups.set(call, { pop, form, since: since || Date.now() });
  window.desk.wrapups = [...wrapups.keys()];
  show($('wrapups'), true);
  announce(t('announce.wrapup', { caller: pop.caller }));
  tick();
}
// More after-call time, a step at a time; the router caps the whole wrap-up at the queue's longest.
const EXTEND_STEP_SECS = 30;
function extendWrapUp(button) {
  text($('error'), '');
  button.disabled = true;
  send({ type: 'extend_wrap_up', secs: EXTEND_STEP_SECS })
    .then(() => { button.disabled = false; announce(t('announce.wrapup_extended')); })
    .catch((e) => {
      // Refused: no more time can be added to this wrap-up; the button stays off.
      const s = e && e.code === 'illegal_transition' ? t('wrapup.extend_refused') : plain(e);
      text($('error'), s); announce(s);
    });
}
function saveWrapUp(call) {
  const w = wrapups.get(call);
  if (!w) return;
  const f = w.form;
  const frame = { type: 'wrap_up', call, disposition: f.querySelector('.wu-disposition').value, notes: f.querySelector('.wu-notes').value };
  if (w.pop.campaign) {
    if (frame.disposition === 'dnc') frame.do_not_call = true;
    else if (f.querySelector('.wu-callback-at').value) {
      frame.callback = { at: new Date(f.querySelector('.wu-callback-at').value).getTime(), personal: f.querySelector('.wu-callback-personal').checked };
    }
  }
  text($('error'), '');
  f.querySelector('.wu-save').disabled = true;
  send(frame).then(() => { keepNotes(call, ''); dropWrapUp(call); announce(t('announce.saved')); })
    .catch((e) => { f.querySelector('.wu-save').disabled = false; showError(e); });
}
function dropWrapUp(call) {
  const w = wrapups.get(call);
  if (!w) return;
  w.form.remove();
  wrapups.delete(call);
  window.desk.wrapups = [...wrapups.keys()];
  show($('wrapups'), wrapups.size > 0);
}

// ---------------------------------------------------------------- timers
function tick() {
  const now = Date.now();
  text($('state-timer'), stateView ? clock(now - stateView.since) : '');
  if (active) {
    text($('call-timer'), active.talkSince ? clock(now - active.talkSince) : (active.phase === 'offered' ? t('call.ringing_for', { time: clock(now - active.since) }) : ''));
    show($('hold-timer'), !!active.heldSince);
    text($('hold-timer'), active.heldSince ? t('call.held_for', { time: clock(now - active.heldSince) }) : '');
  }
  // The newest wrap-up counts down to the moment the router makes the agent available again; the
  // form stays after that until it is saved.
  let first = true;
  for (const call of [...wrapups.keys()].reverse()) {
    const form = wrapups.get(call).form;
    const el = form.querySelector('.wu-countdown');
    const counting = first && stateView && stateView.state === 'wrap_up' && stateView.until;
    if (counting) {
      text(el, t('wrapup.countdown', { time: clock(stateView.until - now) }));
    } else {
      text(el, t('wrapup.unsaved'));
    }
    show(form.querySelector('.wu-extend'), !!counting);
    first = false;
  }
  showHeldBack(now);
  for (const row of document.querySelectorAll('#queues tr[data-since]')) {
    const since = Number(row.dataset.since);
    text(row.children[2], since ? clock(now - since) : '—');
  }
}
setInterval(tick, 1000);

// ---------------------------------------------------------------- ring tone and notification
let audioCtx = null, ringTimer = null;
function audio() {
  if (!audioCtx) { try { audioCtx = new AudioContext(); } catch (_) { audioCtx = null; } }
  if (audioCtx && audioCtx.state === 'suspended') audioCtx.resume().catch(() => {});
  return audioCtx;
}
function ringBurst() {
  const ctx = audio();
  if (!ctx) return;
  // Two short bursts of 400 + 450 Hz, like a phone's ring.
  for (const start of [0, 0.6]) {
    const gain = ctx.createGain();
    gain.gain.setValueAtTime(0.0001, ctx.currentTime + start);
    gain.gain.exponentialRampToValueAtTime(0.2, ctx.currentTime + start + 0.02);
    gain.gain.setValueAtTime(0.2, ctx.currentTime + start + 0.38);
    gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + start + 0.4);
    gain.connect(ctx.destination);
    for (const f of [400, 450]) {
      const osc = ctx.createOscillator();
      osc.frequency.value = f; osc.connect(gain);
      osc.start(ctx.currentTime + start); osc.stop(ctx.currentTime + start + 0.42);
    }
  }
}
function startRinging() {
  if (ringTimer) return;
  window.desk.ringing = true;
  ringBurst();
  ringTimer = setInterval(ringBurst, 3000);
  if (active) notify(active.pop);
}
function stopRinging() {
  window.desk.ringing = false;
  if (ringTimer) { clearInterval(ringTimer); ringTimer = null; }
}
function notify(pop) {
  if (!('Notification' in window)) return;
  const body = t('notify.body', { caller: pop.caller, queue: pop.queue || '' });
  const raise = () => {
    try {
      const n = new Notification(t('notify.title'), { body, tag: pop.call, requireInteraction: true });
      n.onclick = () => { window.focus(); n.close(); };
      window.desk.notified += 1;
    } catch (_) { /* not allowed here */ }
  };
  if (Notification.permission === 'granted') raise();
  else if (Notification.permission === 'default') Notification.requestPermission().then((p) => { if (p === 'granted') raise(); }).catch(() => {});
}

// ---------------------------------------------------------------- queue strip
function setQueues(queues) {
  const body = $('queues');
  body.innerHTML = '';
  for (const q of queues) {
    const row = document.createElement('tr');
    row.dataset.queue = q.queue;
    row.dataset.since = q.oldest_since || '';
    row.innerHTML = '<th scope="row">' + esc(q.queue) + '</th><td>' + esc(I18n.numberFormat(q.waiting)) + '</td><td></td><td>'
      + esc(q.estimated_wait_ms != null ? clock(q.estimated_wait_ms) : '—') + '</td>';
    if (q.waiting > 0) row.classList.add('busy');
    body.appendChild(row);
  }
  tick();
}

// ---------------------------------------------------------------- the softphone
async function answerInBrowser() {
  pc = new RTCPeerConnection({ iceServers: [] });
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
  for (const tr of stream.getTracks()) pc.addTrack(tr, stream);
  pc.ontrack = (e) => { $('remote-audio').srcObject = e.streams[0]; };
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  // Non-trickle: the server end is ICE-lite, so send the offer with every candidate in it.
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    setTimeout(resolve, 2000);
  });
  return pc.localDescription.sdp;
}
async function answerWithSoftphone() {
  if (!active) return;
  const call = active.call;
  try { const sdp = await answerInBrowser(); act({ type: 'accept', call, sdp }); }
  catch (e) { text($('error'), t('error.softphone', { message: e.message })); }
}

// ---------------------------------------------------------------- frames
function onCall(pop, phase, since) {
  if (phase === 'wrap_up') toWrapUp(pop, since);
  else setActive(pop, phase, since);
}
function onFrame(f) {
  switch (f.type) {
    case 'welcome':
      settings = f.settings || { dispositions: [], dispositions_by: {}, not_ready_reasons: [] };
      fillReasons();
      text($('who'), t('who', { name: f.agent.name, id: f.agent.id }));
      $('softphone').checked = f.media === 'browser';
      window.desk.media = f.media;
      window.desk.connected = true;
      setBanner(null);
      setReachable(f.reachable);
      setHeldBack([]); // the server sends its list right after when something is held back
      setState(f.state || null);
      if (active && !f.calls.some((c) => c.pop.call === active.call)) clearActive();
      setPreview(f.preview || null);
      for (const call of [...wrapups.keys()]) if (!f.calls.some((c) => c.pop.call === call)) dropWrapUp(call);
      for (const c of f.calls) {
        onCall(c.pop, c.phase, c.since);
        // After a reload the call is still up: bring the softphone back to it.
        if (f.media === 'browser' && (c.phase === 'connected' || c.phase === 'held')) answerWithSoftphone();
      }
      break;
    case 'state': setState(f); break;
    case 'reachable': setReachable(f); break;
    case 'queues': setQueues(f.queues); break;
    case 'held_back': setHeldBack(f.calls || []); break;
    case 'preview': setPreview(f.preview); break;
    case 'preview_withdrawn': if (preview && preview.lead === f.lead) { setPreview(null); setNotice(t('notice.preview_withdrawn', { why: label('withdraw.', f.reason) })); } break;
    case 'offer':
      if (active && active.call !== f.pop.call && active.phase !== 'offered') break; // never displace a live call
      setActive(f.pop, f.pop.direction === 'outbound' ? 'dialing' : 'offered');
      if (f.pop.direction !== 'outbound') announce(t('announce.offer', { caller: f.pop.caller, queue: f.pop.queue || '' }));
      break;
    case 'offer_withdrawn':
      if (active && f.call === active.call) {
        const why = label('withdraw.', f.reason);
        missed = { caller: active.pop.caller, why, at: Date.now() };
        // The state may have changed before the withdrawal arrived: say both either way.
        if (stateView && stateView.state === 'not_ready') {
          setNotice(t('notice.missed_not_ready', { caller: missed.caller, why, state: stateText(stateView) }));
          missed = null;
        } else setNotice(t('notice.missed', { caller: active.pop.caller, why }));
        clearActive();
      }
      break;
    case 'call_phase':
      if (f.phase === 'wrap_up') {
        const pop = (active && active.call === f.call) ? active.pop : null;
        if (pop) toWrapUp(pop);
      } else if (active && f.call === active.call) setPhase(f.phase);
      break;
    case 'released':
      if (active && f.call === active.call) clearActive();
      if (wrapups.has(f.call)) { dropWrapUp(f.call); }
      break;
    case 'media_answer': if (pc && active && f.call === active.call) pc.setRemoteDescription({ type: 'answer', sdp: f.sdp }); break;
    case 'replaced': setBanner(t('banner.replaced')); retry = 0; break;
    case 'ack': case 'pong': { const p = pending.get(f.id); if (p) { pending.delete(f.id); p.resolve(f); } break; }
    case 'error': {
      const p = pending.get(f.id);
      if (p) { pending.delete(f.id); p.reject(f); } else showError(f);
      if (f.code === 'session_expired') toLogin();
      break;
    }
  }
}

// ---------------------------------------------------------------- connection and session
function toLogin() { location.href = '/?next=/agent'; }
// Nothing stale while offline: the state is unknown and the call controls are off until the
// server says again how things are.
function offline() {
  window.desk.connected = false;
  text($('link'), t('link.offline'));
  setState(null);
  for (const b of document.querySelectorAll('#call-buttons button, #transfer-row button')) b.disabled = true;
  if (retry > 0) setBanner(t('banner.offline'));
}
function connect() {
  const media = $('softphone').checked ? 'browser' : 'phone';
  ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws/agent?media=' + media);
  ws.onopen = () => { text($('link'), t('link.online')); retry = 500; };
  ws.onmessage = (e) => { try { onFrame(JSON.parse(e.data)); } catch (x) { console.error(x); } };
  ws.onclose = (e) => {
    for (const p of pending.values()) p.reject({ code: 'connection_lost' });
    pending.clear();
    if (e.code === 1008 || e.code === 4401) { toLogin(); return; }
    offline();
    if (retry > 0) {
      setTimeout(async () => { if (await checkSession()) connect(); }, retry);
      retry = Math.min(retry * 2, 5000);
    }
  };
}
// A session the server no longer knows (it restarted, or the session lapsed) means logging in again.
async function checkSession() {
  try {
    const r = await fetch('/api/v1/me', { cache: 'no-store' });
    if (r.status === 401) { toLogin(); return false; }
    return true;
  } catch (_) { return true; } // the server is away: keep trying
}
async function signOut() {
  // Leave the queues first, so no call is routed to a desktop nobody watches.
  if (stateView && stateView.state !== 'logged_out') {
    try { await send({ type: 'logout' }); } catch (e) { showError(e); return; }
  }
  retry = 0;
  try { await fetch('/api/v1/logout', { method: 'POST' }); } catch (_) { /* going anyway */ }
  if (ws) ws.close();
  location.href = '/';
}

// ---------------------------------------------------------------- controls
function needsCall(f) { return () => { if (active) act(f(active.call)); }; }
function ready() { audio(); act({ type: 'ready' }); if ('Notification' in window && Notification.permission === 'default') Notification.requestPermission().catch(() => {}); }
function toggleMute() {
  if (!active) return;
  const muted = $('btn-mute').getAttribute('aria-pressed') !== 'true';
  send({ type: 'mute', call: active.call, muted }).then(() => {
    $('btn-mute').setAttribute('aria-pressed', String(muted));
    text($('btn-mute'), muted ? t('btn.unmute') : t('btn.mute'));
    // The agent's own microphone goes quiet too, so the label never lies.
    if (pc) for (const s of pc.getSenders()) if (s.track) s.track.enabled = !muted;
    announce(muted ? t('announce.muted') : t('announce.unmuted'));
  }).catch(showError);
}
function transferTarget() { const to = {}; to[$('transfer-kind').value] = $('transfer-to').value.trim(); return to; }

async function start() {
  await I18n.ready;
  $('btn-ready').onclick = ready;
  $('btn-not-ready').onclick = () => act({ type: 'not_ready', reason: $('reason').value });
  $('btn-login').onclick = () => { audio(); act({ type: 'login' }); };
  $('btn-logout').onclick = () => act({ type: 'logout' });
  $('btn-signout').onclick = signOut;
  $('btn-notice-close').onclick = () => setNotice(null);
  $('btn-reject').onclick = needsCall((call) => ({ type: 'reject', call }));
  $('btn-hold').onclick = needsCall((call) => ({ type: 'hold', call }));
  $('btn-mute').onclick = toggleMute;
  $('btn-unhold').onclick = needsCall((call) => ({ type: 'unhold', call }));
  $('btn-hangup').onclick = needsCall((call) => ({ type: 'hangup', call }));
  $('btn-transfer').onclick = needsCall((call) => ({ type: 'transfer', call, to: transferTarget() }));
  $('btn-accept').onclick = answerWithSoftphone;
  $('btn-consult').onclick = needsCall((call) => ({ type: 'consult', call, to: transferTarget() }));
  $('btn-consult-complete').onclick = needsCall((call) => ({ type: 'consult_complete', call }));
  $('btn-consult-cancel').onclick = needsCall((call) => ({ type: 'consult_cancel', call }));
  $('call-notes').addEventListener('input', () => { if (active) keepNotes(active.call, $('call-notes').value); });
  $('softphone').onchange = () => {
    // Remembered across reloads, so a reloaded page brings the softphone back to a call in progress.
    localStorage.setItem('softphone', $('softphone').checked ? '1' : '');
    if (ws) ws.close();
  };
  $('softphone').checked = localStorage.getItem('softphone') === '1';
  $('btn-dial').onclick = async () => {
    const number = $('dial-number').value.trim();
    if (!number) return;
    try {
      const frame = { type: 'dial', number };
      if ($('softphone').checked) frame.sdp = await answerInBrowser();
      act(frame);
    } catch (e) { text($('error'), t('error.softphone', { message: e.message })); }
  };
  $('btn-preview-dial').onclick = async () => {
    if (!preview) return;
    const frame = { type: 'preview_dial', campaign: preview.campaign, lead: preview.lead };
    try {
      if ($('softphone').checked) frame.sdp = await answerInBrowser();
      text($('error'), '');
      send(frame).then(() => setPreview(null)).catch(showError);
    } catch (e) { text($('error'), t('error.softphone', { message: e.message })); }
  };
  $('btn-preview-skip').onclick = () => {
    if (!preview) return;
    send({ type: 'preview_skip', campaign: preview.campaign, lead: preview.lead }).then(() => setPreview(null)).catch(showError);
  };
  // Shortcuts: Alt+A answer, Alt+H hang up, Alt+O hold or resume, Alt+M mute, Alt+R ready.
  document.addEventListener('keydown', (e) => {
    if (!e.altKey || e.ctrlKey || e.metaKey) return;
    const k = e.key.toLowerCase();
    const click = (id) => { const b = $(id); if (!b.disabled && !b.closest('.hidden')) b.click(); };
    if (k === 'a') click('btn-accept');
    else if (k === 'h') click('btn-hangup');
    else if (k === 'o') click(active && active.phase === 'held' ? 'btn-unhold' : 'btn-hold');
    else if (k === 'm') click('btn-mute');
    else if (k === 'r') click('btn-ready');
    else return;
    e.preventDefault();
  });
  text($('link'), t('link.connecting'));
  setState(null);
  if (await checkSession()) connect();
}
start();
