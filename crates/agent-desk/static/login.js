// Login page: posts the credentials and goes where the server says. `?next=` is passed to the
// server, which keeps it only if it is a path of this site; the page checks the answer once more
// before it navigates, so neither a script URL nor another site can ever be the target.
'use strict';

// A path of this origin, or null.
function sameOriginPath(target) {
  if (typeof target !== 'string' || !/^\/(?![\/\\])[\x21-\x7e]*$/.test(target) || target.includes('\\')) return null;
  try {
    const url = new URL(target, location.origin);
    return url.origin === location.origin ? url.pathname + url.search + url.hash : null;
  } catch (e) { return null; }
}

document.getElementById('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  const err = document.getElementById('error');
  err.textContent = '';
  const next = new URLSearchParams(location.search).get('next');
  const request = { user: document.getElementById('user').value, password: document.getElementById('password').value };
  if (next) request.next = next;
  try {
    const r = await fetch('/api/v1/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(request) });
    const data = await r.json();
    if (!r.ok) {
      // The server's error code picks the sentence, in the page's language.
      const code = data.error && data.error.code;
      const key = 'login.error.' + code;
      const vars = { seconds: r.headers.get('retry-after') || '' };
      err.textContent = code && I18n.t(key) !== key ? I18n.t(key, vars) : I18n.t('login.failed');
      return;
    }
    const home = data.user.role === 'agent' ? '/agent' : '/wallboard';
    location.assign(sameOriginPath(data.redirect) || home);
  } catch (x) { err.textContent = I18n.t('login.unreachable'); }
});
