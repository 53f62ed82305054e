// Customer admin (/customers): find, create, edit (tier, account manager, numbers), merge a
// duplicate into the record that stays. The server validates and audits every change; its error
// codes are shown in the page's language.
'use strict';
const { $, esc, api } = Sup;
let customers = [], editing = null, users = [];
window.customersPage = { get list() { return customers; }, get editing() { return editing; } };

async function find() {
  $('error').textContent = '';
  const p = new URLSearchParams();
  if ($('text').value.trim()) p.set('text', $('text').value.trim());
  if ($('tier-filter').value) p.set('tier', $('tier-filter').value);
  try { customers = (await api('/api/v1/admin/customers?' + p)).customers; } catch (e) { $('error').textContent = e.message; return; }
  document.querySelector('#list tbody').innerHTML = customers.map((c) => '<tr class="clickable" data-id="' + esc(c.id) + '"><td>' + esc(c.name) + '</td><td>' + esc(c.account_number || '') +
    '</td><td class="tier-' + esc(c.tier) + '">' + esc(I18n.t('tier.' + c.tier)) + '</td><td>' + esc(c.account_manager || '') + '</td><td>' + esc((c.phones || []).join(', ')) + '</td></tr>').join('');
}

function edit(c) {
  editing = c ? c.id : null;
  $('editor').hidden = false;
  $('form-error').textContent = '';
  $('editor-title').textContent = c ? I18n.t('customers.edit', { name: c.name }) : I18n.t('customers.new');
  $('c-name').value = c ? c.name : '';
  $('c-account').value = c && c.account_number ? c.account_number : '';
  $('c-phones').value = c ? (c.phones || []).join(', ') : '';
  $('c-email').value = c && c.email ? c.email : '';
  $('c-tier').value = c ? c.tier : 'normal';
  $('c-manager').value = c && c.account_manager ? c.account_manager : '';
  $('c-notes').value = c && c.notes ? c.notes : '';
  $('merge-box').hidden = !c;
  $('history').hidden = !c;
}

async function save(e) {
  e.preventDefault();
  $('form-error').textContent = '';
  const body = { name: $('c-name').value, account_number: $('c-account').value || null, phones: $('c-phones').value.split(/[,;]/).map((s) => s.trim()).filter(Boolean),
    email: $('c-email').value || null, tier: $('c-tier').value, account_manager: $('c-manager').value || null, notes: $('c-notes').value || null };
  try {
    const r = editing ? await api('/api/v1/admin/customers/' + encodeURIComponent(editing), { method: 'PUT', json: body })
      : await api('/api/v1/admin/customers', { method: 'POST', json: body });
    $('text').value = r.customer.id;
    await find();
    edit(r.customer);
    $('form-error').textContent = I18n.t('customers.saved');
  } catch (err) { $('form-error').textContent = err.message; }
}

async function merge(e) {
  e.preventDefault();
  if (!editing) return;
  try {
    const r = await api('/api/v1/admin/customers/' + encodeURIComponent(editing) + '/merge', { method: 'POST', json: { duplicate: $('duplicate').value.trim() } });
    $('duplicate').value = '';
    edit(r.customer);
    await find();
    $('form-error').textContent = I18n.t('customers.merged', { id: r.merged });
  } catch (err) { $('form-error').textContent = err.message; }
}

(async () => {
  await I18n.ready;
  Sup.nav('customers');
  try { users = (await api('/api/v1/users')).users; } catch (_) { users = []; }
  $('c-manager').innerHTML = '<option value="">' + esc(I18n.t('customers.none')) + '</option>' + users.filter((u) => u.role === 'agent').map((u) => '<option value="' + esc(u.id) + '">' + esc(u.name) + ' (' + esc(u.id) + ')</option>').join('');
  $('filters').addEventListener('submit', (e) => { e.preventDefault(); find(); });
  $('new').addEventListener('click', () => edit(null));
  $('form').addEventListener('submit', save);
  $('merge').addEventListener('submit', merge);
  $('history').addEventListener('click', () => { if (editing) location.href = '/search?customer=' + encodeURIComponent(editing); });
  document.querySelector('#list tbody').addEventListener('click', (e) => { const tr = e.target.closest('tr'); if (tr) edit(customers.find((c) => c.id === tr.dataset.id)); });
  find();
})();
