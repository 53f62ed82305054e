// Language catalog for every page. A page names its catalog (<html data-catalog="agent">); the
// strings live in /static/i18n/<catalog>.<lang>.json (English and Simplified Chinese). The
// language is the one chosen on the page (?lang=…, remembered), else the one saved on the user
// (/api/v1/me/language, once logged in), else the one remembered, else the browser's. Markup carries
// keys: data-i18n (text), data-i18n-placeholder, data-i18n-title, data-i18n-aria-label; scripts
// call I18n.t('key', {name: value}). A missing key shows the key itself, so a gap is visible.
'use strict';
(function () {
  const SUPPORTED = ['en', 'zh-CN'];
  function pick(wanted) {
    if (!wanted) return null;
    const exact = SUPPORTED.find((l) => l.toLowerCase() === String(wanted).toLowerCase());
    if (exact) return exact;
    return String(wanted).toLowerCase().startsWith('zh') ? 'zh-CN' : (String(wanted).toLowerCase().startsWith('en') ? 'en' : null);
  }
  function chosen() {
    const fromUrl = pick(new URLSearchParams(location.search).get('lang'));
    if (fromUrl) { try { localStorage.setItem('lang', fromUrl); } catch (_) { /* private mode */ } return fromUrl; }
    let saved = null;
    try { saved = pick(localStorage.getItem('lang')); } catch (_) { /* private mode */ }
    return saved || pick(navigator.language) || 'en';
  }
  let lang = chosen();
  let strings = {};
  function t(key, vars) {
    let s = Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : key;
    if (vars) for (const [k, v] of Object.entries(vars)) s = s.split('{' + k + '}').join(v == null ? '' : String(v));
    return s;
  }
  function apply(root) {
    const scope = root || document;
    scope.querySelectorAll('[data-i18n]').forEach((el) => { el.textContent = t(el.dataset.i18n); });
    scope.querySelectorAll('[data-i18n-placeholder]').forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
    scope.querySelectorAll('[data-i18n-title]').forEach((el) => { el.title = t(el.dataset.i18nTitle); });
    scope.querySelectorAll('[data-i18n-aria-label]').forEach((el) => { el.setAttribute('aria-label', t(el.dataset.i18nAriaLabel)); });
  }
  function numberFormat(n, opts) { return new Intl.NumberFormat(lang, opts).format(n); }
  function dateTime(ms) { return new Date(ms).toLocaleString(lang); }
  async function load(wanted) {
    lang = pick(wanted) || lang;
    const catalog = document.documentElement.dataset.catalog || 'common';
    try {
      const res = await fetch('/static/i18n/' + catalog + '.' + lang + '.json', { cache: 'no-cache' });
      strings = res.ok ? await res.json() : {};
    } catch (_) { strings = {}; }
    document.documentElement.lang = lang;
    apply(document);
    document.dispatchEvent(new CustomEvent('i18n:ready', { detail: { lang } }));
  }
  async function start() {
    const fromUrl = pick(new URLSearchParams(location.search).get('lang'));
    if (!fromUrl && document.documentElement.dataset.catalog !== 'login') {
      try {
        const res = await fetch('/api/v1/me/language', { cache: 'no-cache' });
        const saved = res.ok ? pick((await res.json()).language) : null;
        if (saved) { lang = saved; try { localStorage.setItem('lang', saved); } catch (_) { /* private mode */ } }
      } catch (_) { /* offline: keep the browser's */ }
    }
    return load(lang);
  }
  // Resolves once the catalog is in; pages wait on it before drawing text of their own.
  const ready = start();
  window.I18n = { t, apply, load, ready, numberFormat, dateTime, get lang() { return lang; }, supported: SUPPORTED };
})();
