// The demo's Telegram emulator page (bot/adapters/telegram/demo.py); a file for the CSP.
const log = document.getElementById('log');
const api = log.dataset.api;
let shown = '';
async function post(path, body) {
  await fetch(api + path, {method: 'POST',
    headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  refresh();
}
async function refresh() {
  const r = await fetch(api + 'chat');
  const data = await r.json();
  document.getElementById('bot').textContent = '@' + data.bot;
  const key = JSON.stringify(data.messages);
  if (key === shown) return;
  shown = key;
  log.replaceChildren();
  for (const m of data.messages) {
    const div = document.createElement('div');
    div.className = 'm' + (m.from_bot ? '' : ' me');
    div.textContent = m.text;
    if (m.buttons.length) {
      const kb = document.createElement('div');
      kb.className = 'kb';
      for (const [label, payload] of m.buttons) {
        const b = document.createElement('button');
        b.textContent = label;
        b.onclick = () => post('tap', {message_id: m.id, data: payload});
        kb.appendChild(b);
      }
      div.appendChild(kb);
    }
    log.appendChild(div);
  }
  window.scrollTo(0, document.body.scrollHeight);
}
document.getElementById('f').onsubmit = (e) => {
  e.preventDefault();
  const t = document.getElementById('t');
  if (t.value.trim()) post('send', {text: t.value});
  t.value = '';
};
const start = new URLSearchParams(location.search).get('start');
if (start) { history.replaceState(null, '', location.pathname); post('open', {token: start}); }
refresh();
setInterval(refresh, 700);
