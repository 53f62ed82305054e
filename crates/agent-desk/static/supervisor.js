// Shared by the supervisor pages (wallboard, reports, search, customers): the navigation bar with
// the user's language (saved on the user), number and time formatting, and API calls whose errors
// are shown by their code through the page's catalog ('error.<code>').
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  function esc(s) { const d = document.createElement('div'); d.textContent = s == null ? '' : String(s); return d.innerHTML; }
  // Under 10 s with a tenth ("0.4 s"), else m:ss, or h:mm:ss from an hour on; '—' when unknown.
  function dur(ms) {
    if (ms == null || !isFinite(ms)) return '—';
    if (ms > 0 && ms < 9950) return I18n.t('unit.seconds', { n: I18n.numberFormat(ms / 1000, { minimumFractionDigits: 1, maximumFractionDigits: 1 }) });
    const s = Math.max(0, Math.round(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + ':' + String(m).padStart(2, '0') : String(m)) + ':' + String(r).padStart(2, '0');
  }
  function pct(x) { return x == null ? '—' : I18n.numberFormat(x * 100, { maximumFractionDigits: 1 }) + '%'; }
  function num(x, digits) { return x == null ? '—' : I18n.numberFormat(x, { maximumFractionDigits: digits || 0 }); }
  function time(ms) { return new Date(ms).toLocaleTimeString(I18n.lang, { hour: '2-digit', minute: '2-digit' }); }
  function dateTime(ms) { return ms == null ? '—' : new Date(ms).toLocaleString(I18n.lang); }
  // "Today 00:00–14:35 (UTC+8)": the period a figure covers.
  function period(p) {
    const tz = p.tz_minutes, sign = tz < 0 ? '−' : '+';
    const zone = 'UTC' + sign + Math.floor(Math.abs(tz) / 60) + (Math.abs(tz) % 60 ? ':' + String(Math.abs(tz) % 60).padStart(2, '0') : '');
    const day = (ms) => new Date(ms + tz * 60000).toISOString().slice(0, 10);
    const hm = (ms) => new Date(ms + tz * 60000).toISOString().slice(11, 16);
    const last = p.to_ms - 1;
    const same = day(p.from_ms) === day(last);
    // A period ending at midnight ends at 24:00 of its last day.
    const end = hm(p.to_ms) === '00:00' ? '24:00' : hm(p.to_ms);
    return I18n.t('period.range', {
      from: day(p.from_ms) + ' ' + hm(p.from_ms),
      to: (same ? '' : day(last) + ' ') + end,
      zone,
    });
  }
  // uPlot's time axis in the page's language (24-hour where the language writes it so). Ticks at
  // least 80 px apart: "12:00 AM" is wider than uPlot's default spacing, and labels ran together.
  function timeAxis(extra) {
    return Object.assign({ space: 80, values: (u, ticks) => ticks.map((t) => new Date(t * 1000).toLocaleTimeString(I18n.lang, { hour: '2-digit', minute: '2-digit' })) }, extra || {});
  }
  // An axis of counts or seconds from 0: with nothing counted yet uPlot would scale 0 to 0.001.
  function countScale() {
    return { range: (u, min, max) => [0, Math.max(1, max || 0)] };
  }
  // A not-ready reason in the page's language, or as the agent gave it.
  function reason(code) { const k = 'reason.' + code; const t = I18n.t(k); return t === k ? code : t; }
  function tzMinutes() { return -new Date().getTimezoneOffset(); }
  async function api(path, opts) {
    const o = Object.assign({ headers: {} }, opts || {});
    if (o.json !== undefined) { o.body = JSON.stringify(o.json); o.headers['Content-Type'] = 'application/json'; delete o.json; }
    const r = await fetch(path, o);
    if (r.status === 401) { location.href = '/?next=' + encodeURIComponent(location.pathname + location.search); throw new Error('unauthorized'); }
    const text = await r.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
    if (!r.ok) {
      const code = body && body.error ? body.error.code : 'http_' + r.status;
      const e = new Error(I18n.t('error.' + code) === 'error.' + code ? (body && body.error ? body.error.message : code) : I18n.t('error.' + code));
      e.code = code;
      throw e;
    }
    return body;
  }
  function nav(active) {
    const el = $('nav');
    if (!el) return;
    const pages = [['wallboard', '/wallboard'], ['reports', '/reports'], ['search', '/search'], ['customers', '/customers']];
    el.innerHTML = pages.map(([k, href]) => '<a href="' + href + '"' + (k === active ? ' aria-current="page"' : '') + ' data-i18n="nav.' + k + '">' + esc(I18n.t('nav.' + k)) + '</a>').join('') +
      '<select id="lang" aria-label="' + esc(I18n.t('nav.language')) + '"><option value="en" lang="en">English</option><option value="zh-CN" lang="zh-CN">简体中文</option></select>';
    const sel = $('lang');
    sel.value = I18n.lang;
    sel.addEventListener('change', async () => {
      try { await api('/api/v1/me/language', { method: 'PUT', json: { language: sel.value } }); } catch (_) { /* shown on next load */ }
      try { localStorage.setItem('lang', sel.value); } catch (_) { /* private mode */ }
      const u = new URL(location.href); u.searchParams.delete('lang'); location.href = u.toString();
    });
  }
  window.Sup = { $, esc, dur, pct, num, time, dateTime, period, tzMinutes, api, nav, timeAxis, countScale, reason };
})();
