// Agent desktop: the CTI socket (/ws/agent), the screen pop, call controls, wrap-up, and the browser
// softphone (WebRTC: our SDP offer goes in "accept", the server's answer comes as "media_answer").
'use strict';
const $ = (id) => document.getElementById(id);
let ws = null, nextId = 1, call = null, phase = null, pc = null, retry = 500, campaignCall = null;
const pending = new Map();
// What the desktop shows, in one place (handy for support and for browser tests).
window.desk = { media: null, state: null, call: null, phase: null, preview: null };
let preview = null;

function show(el, on) { el.classList.toggle('hidden', !on); }
function text(el, t) { el.textContent = t == null ? '' : String(t); }
function esc(s) { const d = document.createElement('div'); d.textContent = s == null ? '' : String(s); return d.innerHTML; }

function send(frame) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error('not connected'));
  const id = nextId++;
  frame.id = id;
  ws.send(JSON.stringify(frame));
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}
function act(frame) { text($('error'), ''); send(frame).catch((e) => text($('error'), e.message)); }

function setState(s) {
  window.desk.state = s.state;
  const el = $('state');
  el.className = 'state ' + s.state;
  text(el, s.state.replace('_', ' ') + (s.reason ? ' (' + s.reason + ')' : ''));
}

function customerHtml(c) {
  const cu = c.customer;
  let h = '<h2>' + esc(cu.name) + ' <span class="tier-' + esc(cu.tier) + '">' + esc(cu.tier) + '</span></h2>';
  h += '<div class="muted">Account ' + esc(cu.account_number || '—') + (cu.account_manager ? ' · account manager ' + esc(cu.account_manager) : '') + '</div>';
  if (c.recent && c.recent.length) {
    h += '<table><tr><th>When</th><th>Queue</th><th>Agent</th><th>Outcome</th></tr>';
    for (const i of c.recent) {
      h += '<tr><td>' + esc(i.arrived_at_ms ? new Date(i.arrived_at_ms).toLocaleString() : '') + '</td><td>' + esc(i.queue) + '</td><td>' + esc(i.agent) + '</td><td>' + esc(i.abandoned ? 'abandoned' : (i.disposition || '')) + '</td></tr>';
    }
    h += '</table>';
  }
  return h;
}

// A preview campaign's lead: the agent dials it or skips it.
function setPreview(p) {
  preview = p; window.desk.preview = p;
  show($('preview'), !!p);
  if (!p) return;
  text($('preview-campaign'), 'campaign ' + p.campaign);
  text($('preview-name'), p.name || p.lead);
  text($('preview-number'), p.number);
  text($('preview-attempt'), (p.callback ? 'callback · ' : '') + 'attempt ' + p.attempt);
  $('preview-customer').innerHTML = p.customer ? customerHtml(p.customer) : '<p class="muted">No customer record linked.</p>';
}

function renderPop(pop) {
  campaignCall = pop.campaign || null;
  text($('pop-caller'), pop.caller);
  text($('pop-queue'), pop.campaign ? 'campaign ' + pop.campaign.campaign : (pop.direction === 'outbound' ? 'outbound call' : pop.queue));
  text($('pop-wait'), pop.direction === 'outbound' ? '' : 'waited ' + Math.round(pop.waited_ms / 1000) + ' s');
  text($('pop-why'), pop.explanation);
  const c = pop.customer;
  if (c) {
    $('pop-customer').innerHTML = customerHtml(c);
  } else {
    $('pop-customer').innerHTML = '<p class="muted">Caller not found in the CRM.</p>';
  }
  const ivr = pop.ivr;
  if (ivr && ivr.variables && Object.keys(ivr.variables).length) {
    let h = '<h2>Entered in the IVR</h2><table>';
    for (const [k, v] of Object.entries(ivr.variables)) h += '<tr><th>' + esc(k) + '</th><td>' + esc(typeof v === 'object' ? JSON.stringify(v) : v) + '</td></tr>';
    $('pop-ivr').innerHTML = h + '</table>';
  } else { $('pop-ivr').innerHTML = ''; }
}

function setPhase(p) {
  phase = p;
  window.desk.call = call; window.desk.phase = p;
  const el = $('call-phase');
  el.className = 'state ' + ({ consulting: 'reserved', dialing: 'reserved', offered: 'reserved', connected: 'on_call', held: 'reserved', wrap_up: 'wrap_up' }[p] || '');
  text(el, p.replace('_', ' '));
  show($('call'), true);
  const browser = $('softphone').checked;
  $('btn-accept').disabled = p !== 'offered' || !browser;
  $('btn-accept').title = browser ? '' : 'Answer on your SIP phone';
  $('btn-reject').disabled = p !== 'offered';
  $('btn-hold').disabled = p !== 'connected';
  $('btn-mute').disabled = !(p === 'connected' || p === 'held');
  $('btn-unhold').disabled = p !== 'held';
  $('btn-hangup').disabled = !(p === 'connected' || p === 'held' || p === 'dialing');
  $('btn-transfer').disabled = p !== 'connected';
  $('btn-consult').disabled = p !== 'connected';
  $('btn-consult-complete').disabled = p !== 'consulting';
  $('btn-consult-cancel').disabled = p !== 'consulting';
  show($('wrapup'), p === 'wrap_up');
  // Callbacks and do-not-call are for campaign leads only.
  show($('campaign-wrapup'), p === 'wrap_up' && !!campaignCall);
  show($('disposition-dnc'), !!campaignCall);
}

function clearCall() {
  call = null; phase = null;
  window.desk.call = null; window.desk.phase = null;
  show($('call'), false);
  if (pc) { pc.close(); pc = null; }
}

async function answerInBrowser() {
  pc = new RTCPeerConnection({ iceServers: [] });
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
  for (const t of stream.getTracks()) pc.addTrack(t, stream);
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
  try { const sdp = await answerInBrowser(); act({ type: 'accept', call, sdp }); }
  catch (e) { text($('error'), 'Softphone: ' + e.message); }
}

function onFrame(f) {
  switch (f.type) {
    case 'welcome':
      text($('who'), f.agent.name + ' (' + f.agent.id + ')');
      $('softphone').checked = f.media === 'browser';
      window.desk.media = f.media;
      if (f.state) setState(f.state);
      clearCall();
      setPreview(f.preview || null);
      for (const c of f.calls) {
        call = c.pop.call; renderPop(c.pop); setPhase(c.phase);
        // After a reload the call is still up: bring the softphone back to it.
        if (f.media === 'browser' && (c.phase === 'connected' || c.phase === 'held')) answerWithSoftphone();
      }
      break;
    case 'state': setState(f); break;
    case 'preview': setPreview(f.preview); break;
    case 'preview_withdrawn': if (preview && preview.lead === f.lead) { setPreview(null); text($('error'), 'Preview withdrawn: ' + f.reason); } break;
    case 'offer': call = f.pop.call; renderPop(f.pop); setPhase(f.pop.direction === 'outbound' ? 'dialing' : 'offered'); break;
    case 'offer_withdrawn': if (f.call === call) clearCall(); break;
    case 'call_phase': if (f.call === call) setPhase(f.phase); break;
    case 'released': if (f.call === call) clearCall(); break;
    case 'media_answer': if (pc && f.call === call) pc.setRemoteDescription({ type: 'answer', sdp: f.sdp }); break;
    case 'replaced': text($('error'), 'This desktop was opened elsewhere.'); retry = 0; break;
    case 'ack': case 'pong': { const p = pending.get(f.id); if (p) { pending.delete(f.id); p.resolve(f); } break; }
    case 'error': {
      const p = pending.get(f.id);
      if (p) { pending.delete(f.id); p.reject(new Error(f.message + ' [' + f.code + ']')); }
      else text($('error'), f.message);
      if (f.code === 'session_expired') location.href = '/?next=/agent';
      break;
    }
  }
}

function connect() {
  const media = $('softphone').checked ? 'browser' : 'phone';
  ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws/agent?media=' + media);
  ws.onopen = () => { text($('link'), 'online'); retry = 500; };
  ws.onmessage = (e) => { try { onFrame(JSON.parse(e.data)); } catch (x) { console.error(x); } };
  ws.onclose = (e) => {
    text($('link'), 'offline');
    for (const p of pending.values()) p.reject(new Error('connection lost'));
    pending.clear();
    if (e.code === 1008 || e.code === 4401) { location.href = '/?next=/agent'; return; }
    if (retry > 0) { setTimeout(connect, retry); retry = Math.min(retry * 2, 5000); }
  };
}

async function checkSession() {
  const r = await fetch('/api/v1/me');
  if (r.status === 401) { location.href = '/?next=/agent'; return false; }
  return true;
}

$('btn-ready').onclick = () => act({ type: 'ready' });
$('btn-not-ready').onclick = () => act({ type: 'not_ready', reason: $('reason').value });
$('btn-login').onclick = () => act({ type: 'login' });
$('btn-logout').onclick = () => act({ type: 'logout' });
$('btn-reject').onclick = () => act({ type: 'reject', call });
$('btn-hold').onclick = () => act({ type: 'hold', call });
$('btn-mute').onclick = () => {
  const muted = $('btn-mute').getAttribute('aria-pressed') !== 'true';
  send({ type: 'mute', call, muted }).then(() => {
    $('btn-mute').setAttribute('aria-pressed', String(muted));
    text($('btn-mute'), muted ? 'Unmute' : 'Mute');
  }).catch((e) => text($('error'), e.message));
};
$('btn-unhold').onclick = () => act({ type: 'unhold', call });
$('btn-hangup').onclick = () => act({ type: 'hangup', call });
$('btn-transfer').onclick = () => { const to = {}; to[$('transfer-kind').value] = $('transfer-to').value.trim(); act({ type: 'transfer', call, to }); };
$('btn-accept').onclick = answerWithSoftphone;
$('btn-consult').onclick = () => { const to = {}; to[$('transfer-kind').value] = $('transfer-to').value.trim(); act({ type: 'consult', call, to }); };
$('btn-consult-complete').onclick = () => act({ type: 'consult_complete', call });
$('btn-consult-cancel').onclick = () => act({ type: 'consult_cancel', call });
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
  } catch (e) { text($('error'), 'Softphone: ' + e.message); }
};
$('btn-preview-dial').onclick = async () => {
  if (!preview) return;
  const frame = { type: 'preview_dial', campaign: preview.campaign, lead: preview.lead };
  try {
    if ($('softphone').checked) frame.sdp = await answerInBrowser();
    text($('error'), '');
    send(frame).then(() => setPreview(null)).catch((e) => text($('error'), e.message));
  } catch (e) { text($('error'), 'Softphone: ' + e.message); }
};
$('btn-preview-skip').onclick = () => {
  if (!preview) return;
  send({ type: 'preview_skip', campaign: preview.campaign, lead: preview.lead })
    .then(() => setPreview(null)).catch((e) => text($('error'), e.message));
};
$('wrapup').addEventListener('submit', (e) => {
  e.preventDefault();
  const frame = { type: 'wrap_up', call, disposition: $('disposition').value, notes: $('notes').value };
  if (campaignCall) {
    if (frame.disposition === 'dnc') frame.do_not_call = true;
    else if ($('callback-at').value) {
      frame.callback = { at: new Date($('callback-at').value).getTime(), personal: $('callback-personal').checked };
    }
  }
  act(frame);
  $('notes').value = ''; $('callback-at').value = ''; $('callback-personal').checked = false;
});
checkSession().then((ok) => { if (ok) connect(); });
