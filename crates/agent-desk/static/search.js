// Interaction search (/search): by number, customer, agent, queue, disposition and dates; each
// interaction's facts and timeline, and its recording played in the page (every playback is
// audited by the server).
'use strict';
const { $, esc, dur, dateTime, tzMinutes, api } = Sup;
let found = [];
window.search = { get found() { return found; } };

function outcome(r) {
  if (r.abandoned) return I18n.t('search.abandoned');
  return r.disposition ? esc(r.disposition) : (r.answered_at ? I18n.t('search.answered') : '—');
}

async function run() {
  $('error').textContent = '';
  const p = new URLSearchParams({ tz: tzMinutes() });
  for (const k of ['number', 'customer', 'agent', 'queue', 'disposition', 'from', 'to']) if ($(k).value.trim()) p.set(k, $(k).value.trim());
  try { found = (await api('/api/v1/interactions?' + p)).interactions; } catch (e) { $('error').textContent = e.message; return; }
  $('count').textContent = I18n.t('search.count', { n: found.length });
  document.querySelector('#results tbody').innerHTML = found.map((r) => '<tr class="clickable" data-id="' + esc(r.id) + '"><td>' + esc(dateTime(r.arrived_at)) + '</td><td>' + esc(r.caller_number || '') +
    '</td><td>' + esc(r.queue_id || '') + '</td><td>' + esc(r.agent_id || '') + '</td><td class="n">' + dur(r.wait_ms) + '</td><td class="n">' + dur(r.talk_ms) + '</td><td>' + outcome(r) +
    '</td><td>' + (r.has_recording ? '▶' : '') + '</td></tr>').join('');
}

async function show(id) {
  document.querySelectorAll('#results tr').forEach((tr) => tr.classList.toggle('selected', tr.dataset.id === id));
  let d;
  try { d = await api('/api/v1/interactions/' + encodeURIComponent(id)); } catch (e) { $('error').textContent = e.message; return; }
  const i = d.interaction;
  const facts = [['search.id', i.id], ['search.caller', i.caller_number], ['search.called', i.called_number], ['search.customer', i.customer_id], ['col.queue', i.queue_id], ['col.agent', i.agent_id],
    ['search.arrived', dateTime(i.arrived_at)], ['search.wait', dur(i.wait_ms)], ['col.talk', dur(i.talk_ms)], ['col.hold', dur(i.hold_ms)], ['col.wrap_up', dur(i.wrap_ms)],
    ['search.disposition', i.disposition], ['search.notes', i.notes], ['search.survey', i.survey_score], ['search.ivr_path', i.ivr_path]];
  $('facts').innerHTML = facts.filter(([, v]) => v != null && v !== '').map(([k, v]) => '<dt>' + esc(I18n.t(k)) + '</dt><dd>' + esc(v) + '</dd>').join('');
  $('timeline').innerHTML = d.timeline.map((e) => '<li><span class="at">' + esc(new Date(e.at).toLocaleTimeString(I18n.lang)) + '</span>' + esc(I18n.t('event.' + e.kind) === 'event.' + e.kind ? e.kind : I18n.t('event.' + e.kind)) + '</li>').join('');
  const player = $('player');
  player.hidden = !i.has_recording;
  player.removeAttribute('src');
  if (i.has_recording) player.src = '/api/v1/interactions/' + encodeURIComponent(i.id) + '/recording';
  $('detail').hidden = false;
}

(async () => {
  await I18n.ready;
  Sup.nav('search');
  $('filters').addEventListener('submit', (e) => { e.preventDefault(); run(); });
  document.querySelector('#results tbody').addEventListener('click', (e) => { const tr = e.target.closest('tr'); if (tr) show(tr.dataset.id); });
  const params = new URLSearchParams(location.search);
  for (const k of ['number', 'customer', 'agent', 'queue', 'disposition', 'from', 'to']) if (params.get(k)) $(k).value = params.get(k);
  run();
})();
