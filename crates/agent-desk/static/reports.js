// Report pages (/reports): interval, queue, agent, survey and campaign reports over a date range in
// a time zone, with charts (uPlot) and CSV export; the figures are the CRM's, the same as the
// `callcenter report` command's.
'use strict';
const { $, esc, dur, pct, num, period, tzMinutes, api, timeAxis, countScale, reason } = Sup;
let kind = 'interval';
let names = {};
const who = (id) => (names[id] ? esc(names[id]) + ' <span class="muted">' + esc(id) + '</span>' : esc(id));
let last = null;
window.reports = { get last() { return last; } };

const pctCol = (k, label) => [k, label, (r) => pct(r[k])];
const durCol = (k, label) => [k, label, (r) => dur(r[k])];
const numCol = (k, label, d) => [k, label, (r) => num(r[k], d)];
const timeOf = (ms) => new Date(ms + Number($('tz').value) * 60000).toISOString().slice(0, 16).replace('T', ' ');
const COLUMNS = {
  interval: [['queue', 'col.queue', (r) => esc(r.queue)], ['interval_start_ms', 'col.interval_start', (r) => timeOf(r.interval_start_ms)],
    numCol('offered', 'col.offered'), numCol('answered', 'col.answered'), numCol('abandoned', 'col.abandoned'), pctCol('abandon_rate', 'col.abandon_rate'),
    pctCol('service_level', 'col.service_level'), durCol('asa_ms', 'col.asa'), durCol('aht_ms', 'col.aht'), durCol('max_wait_ms', 'col.max_wait')],
  queues: [['queue', 'col.queue', (r) => esc(r.queue)], numCol('offered', 'col.offered'), numCol('answered', 'col.answered'), numCol('abandoned', 'col.abandoned'),
    pctCol('abandon_rate', 'col.abandon_rate'), numCol('answered_within_threshold', 'col.answered_within'), pctCol('service_level', 'col.service_level'),
    durCol('asa_ms', 'col.asa'), durCol('aht_ms', 'col.aht'), durCol('max_wait_ms', 'col.max_wait')],
  agents: [['agent', 'col.agent', (r) => who(r.agent)], numCol('handled', 'col.handled'), durCol('login_ms', 'col.login'), durCol('available_ms', 'col.ready'),
    durCol('not_ready_ms', 'col.not_ready'), ['not_ready_by_reason', 'col.by_reason', (r) => Object.entries(r.not_ready_by_reason || {}).map(([k, v]) => esc(reason(k)) + ' ' + dur(v)).join(', ')],
    durCol('reserved_ms', 'col.ringing'), durCol('talk_ms', 'col.talk'), durCol('hold_ms', 'col.hold'), durCol('wrap_up_ms', 'col.wrap_up'), durCol('aht_ms', 'col.aht'),
    pctCol('occupancy', 'col.occupancy'), pctCol('adherence_ready', 'col.adherence')],
  surveys: [['group', 'col.group', (r) => esc(r.group === 'all' ? I18n.t('surveys.all') : r.group) + (r.group !== 'all' && names[r.group] ? ' · ' + esc(names[r.group]) : '')], numCol('responses', 'col.responses'), numCol('average', 'col.average', 2),
    numCol('score_1', 'col.score_1'), numCol('score_2', 'col.score_2'), numCol('score_3', 'col.score_3'), numCol('score_4', 'col.score_4'), numCol('score_5', 'col.score_5')],
  campaigns: [['campaign', 'col.campaign', (r) => esc(r.campaign)], numCol('dials', 'col.dials'), numCol('human', 'col.human'), numCol('machine', 'col.machine'),
    numCol('no_answer', 'col.no_answer'), numCol('busy', 'col.busy'), numCol('connected', 'col.connected'), numCol('abandoned', 'col.abandoned'),
    pctCol('abandon_rate', 'col.campaign_abandon_rate'), durCol('talk_ms', 'col.talk')],
};

function query(extra) {
  const p = new URLSearchParams({ from: $('from').value, to: $('to').value, tz: $('tz').value, sl_seconds: $('sl').value });
  if (kind === 'interval') p.set('interval', $('interval').value);
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  return p.toString();
}

let plots = [];
function drawCharts(rows) {
  plots.forEach((p) => p.destroy()); plots = [];
  $('charts').innerHTML = '';
  if (typeof uPlot === 'undefined' || rows.length === 0) return;
  const box = (title) => { const d = document.createElement('div'); d.className = 'chart'; d.innerHTML = '<h3>' + esc(title) + '</h3>'; $('charts').appendChild(d); return d; };
  const width = () => Math.max(360, Math.floor(($('charts').clientWidth || 800) / 2) - 16);
  const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 60] }) : undefined;
  if (kind === 'interval') {
    const by = {};
    for (const r of rows) {
      const s = by[r.interval_start_ms] || (by[r.interval_start_ms] = { offered: 0, answered: 0, abandoned: 0, within: 0, wait: 0 });
      s.offered += r.offered; s.answered += r.answered; s.abandoned += r.abandoned; s.within += r.answered_within_threshold; s.wait += (r.asa_ms || 0) * r.answered;
    }
    const xs = Object.keys(by).map(Number).sort((a, b) => a - b), t = xs.map((x) => x / 1000);
    const range = { x: { time: true, range: () => [last.period.from_ms / 1000, last.period.to_ms / 1000] } };
    plots.push(new uPlot({ width: width(), height: 220, scales: Object.assign({ y: countScale() }, range), series: [{}, { label: I18n.t('col.offered'), stroke: '#1f5eff', fill: 'rgba(31,94,255,.25)', paths: bars }, { label: I18n.t('col.answered'), stroke: '#1a7f37', width: 2 }, { label: I18n.t('col.abandoned'), stroke: '#c62828', width: 2 }], axes: [timeAxis(), {}] },
      [t, xs.map((x) => by[x].offered), xs.map((x) => by[x].answered), xs.map((x) => by[x].abandoned)], box(I18n.t('chart.volume'))));
    plots.push(new uPlot({ width: width(), height: 220, scales: Object.assign({ '%': { range: [0, 100] }, s: countScale() }, range),
      series: [{}, { label: I18n.t('col.service_level'), stroke: '#1a7f37', width: 2, scale: '%' }, { label: I18n.t('col.asa'), stroke: '#b35900', width: 2, scale: 's' }],
      axes: [timeAxis(), { scale: '%', label: '%' }, { scale: 's', side: 1, label: I18n.t('axis.seconds'), grid: { show: false } }] },
    [t, xs.map((x) => by[x].answered ? 100 * by[x].within / by[x].answered : null), xs.map((x) => by[x].answered ? by[x].wait / by[x].answered / 1000 : null)], box(I18n.t('chart.service'))));
  } else if (kind === 'agents' || kind === 'queues' || kind === 'campaigns') {
    // One bar group per row: x is the row's place, its name on the axis.
    const names = rows.map((r) => r.agent || r.queue || r.campaign);
    const xs = rows.map((_, i) => i);
    const axis = { values: (u, ticks) => ticks.map((v) => (Number.isInteger(v) && names[v] != null ? names[v] : '')) };
    const series = kind === 'agents'
      ? [['occupancy', '#1f5eff'], ['adherence_ready', '#1a7f37']].map(([k, c]) => ({ label: I18n.t(k === 'occupancy' ? 'col.occupancy' : 'col.adherence'), stroke: c, fill: c + '55', paths: bars, k, scale: '%' }))
      : [['offered', '#1f5eff'], ['answered', '#1a7f37'], ['abandoned', '#c62828']].map(([k, c]) => ({ label: I18n.t('col.' + k), stroke: c, width: 2, k }));
    if (kind === 'campaigns') { series[0].k = 'dials'; series[0].label = I18n.t('col.dials'); series[1].k = 'connected'; series[1].label = I18n.t('col.connected'); }
    const data = [xs].concat(series.map((s) => rows.map((r) => (s.scale === '%' ? (r[s.k] == null ? null : 100 * r[s.k]) : r[s.k]))));
    plots.push(new uPlot({ width: width(), height: 220, scales: { x: { time: false, range: [-0.5, Math.max(0.5, rows.length - 0.5)] }, '%': { range: [0, 100] } },
      series: [{ value: (u, v) => names[v] || '' }].concat(series.map(({ k, ...s }) => s)),
      axes: [axis, kind === 'agents' ? { scale: '%', label: '%' } : {}] }, data, box(I18n.t('chart.' + kind))));
  } else if (kind === 'surveys') {
    const all = rows[0];
    plots.push(new uPlot({ width: width(), height: 220, scales: { x: { time: false, range: [0.5, 5.5] } },
      series: [{}, { label: I18n.t('col.responses'), stroke: '#1f5eff', fill: 'rgba(31,94,255,.35)', paths: bars }] },
    [[1, 2, 3, 4, 5], [all.score_1, all.score_2, all.score_3, all.score_4, all.score_5]], box(I18n.t('chart.surveys'))));
  }
}

async function run() {
  $('error').textContent = '';
  document.querySelectorAll('#kinds button').forEach((b) => b.setAttribute('aria-selected', String(b.dataset.kind === kind)));
  $('interval-field').hidden = kind !== 'interval';
  $('report-title').textContent = I18n.t('reports.kind.' + kind);
  $('csv').href = '/api/v1/reports/' + kind + '?' + query({ format: 'csv' });
  try {
    last = await api('/api/v1/reports/' + kind + '?' + query());
  } catch (e) { $('error').textContent = e.message; return; }
  const rows = last.report.rows || [];
  $('period').textContent = period(last.period);
  const cols = COLUMNS[kind];
  document.querySelector('#report thead').innerHTML = '<tr>' + cols.map(([k, label]) => '<th class="' + (k === 'queue' || k === 'agent' || k === 'group' || k === 'campaign' || k === 'not_ready_by_reason' || k === 'interval_start_ms' ? '' : 'n') + '">' + esc(I18n.t(label)) + '</th>').join('') + '</tr>';
  document.querySelector('#report tbody').innerHTML = rows.map((r) => '<tr>' + cols.map(([k, , f]) => '<td data-col="' + k + '" class="' + (k === 'queue' || k === 'agent' || k === 'group' || k === 'campaign' || k === 'not_ready_by_reason' || k === 'interval_start_ms' ? '' : 'n') + '">' + f(r) + '</td>').join('') + '</tr>').join('');
  $('empty').hidden = rows.length > 0;
  drawCharts(rows);
}

(async () => {
  await I18n.ready;
  Sup.nav('reports');
  try { for (const u of (await api('/api/v1/users')).users) names[u.id] = u.name; } catch (_) { /* ids only */ }
  const tz = tzMinutes();
  const zones = [...new Set([tz, 0, 480, 540, 330, 60, 120, -300, -480])];
  $('tz').innerHTML = zones.map((m) => '<option value="' + m + '">UTC' + (m < 0 ? '−' : '+') + Math.floor(Math.abs(m) / 60) + (Math.abs(m) % 60 ? ':' + String(Math.abs(m) % 60).padStart(2, '0') : '') + (m === tz ? ' · ' + esc(I18n.t('reports.tz_browser')) : '') + '</option>').join('');
  const params = new URLSearchParams(location.search);
  const today = new Date(Date.now() + tz * 60000).toISOString().slice(0, 10);
  $('from').value = params.get('from') || today;
  $('to').value = params.get('to') || today;
  if (params.get('tz')) $('tz').value = params.get('tz');
  if (params.get('interval')) $('interval').value = params.get('interval');
  if (params.get('kind') && COLUMNS[params.get('kind')]) kind = params.get('kind');
  $('kinds').addEventListener('click', (e) => { const b = e.target.closest('button'); if (b) { kind = b.dataset.kind; run(); } });
  $('filters').addEventListener('submit', (e) => { e.preventDefault(); run(); });
  run();
})();
