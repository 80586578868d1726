// The web chat simulator (bot/templates/simulator.html); a file, so the CSP needs no inline script.
const config = document.getElementById("simulator-config").dataset;
const token = config.token || null;
let session = null, after = 0, polling = false;
const log = document.getElementById("log");
function bubble(cls, text) { const d = document.createElement("div"); d.className = "msg " + cls; d.textContent = text; log.appendChild(d); log.scrollTop = log.scrollHeight; return d; }
function disableOld(questionId) { document.querySelectorAll(`[data-question="${questionId}"] button`).forEach(b => b.disabled = true); }
function render(m) {
  if (m.extra && m.extra.ack) { disableOld(m.question_id); bubble("ack", m.text); return; }
  if (m.update && m.question_id) { const old = document.querySelector(`[data-question="${m.question_id}"]`); if (old) old.remove(); }
  const d = bubble("bot", m.text);
  if (m.buttons && m.buttons.length) {
    const box = document.createElement("div"); box.className = "buttons";
    if (m.question_id) d.dataset.question = m.question_id;
    for (const [label, payload] of m.buttons) {
      const b = document.createElement("button"); b.type = "button"; b.textContent = label;
      b.onclick = () => { send({payload}); if (!payload.endsWith("-done") && !m.question_id) box.querySelectorAll("button").forEach(x => x.disabled = true); };
      box.appendChild(b);
    }
    d.appendChild(box);
  }
}
async function api(path, body) {
  const r = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  return r.json();
}
async function poll() {
  if (!session || polling) return; polling = true;
  try {
    const r = await fetch(`/simulator/api/messages?session=${encodeURIComponent(session)}&after=${after}`);
    const data = await r.json();
    for (const m of data.messages) { after = Math.max(after, m.id); render(m); }
  } finally { polling = false; }
}
async function open(body) {
  const data = await api("/simulator/api/session", body);
  session = data.session; after = 0; log.innerHTML = "";
  await poll();
}
async function send(body) {
  if (!session) return;
  if (body.text) bubble("me", body.text);
  await api("/simulator/api/send", {session, ...body});
  setTimeout(poll, 150);
}
document.getElementById("form").onsubmit = (e) => { e.preventDefault(); const t = document.getElementById("text"); if (t.value.trim()) { send({text: t.value}); t.value = ""; } };
document.getElementById("try").onclick = () => open({survey: document.getElementById("survey").value, lang: document.getElementById("lang").value});
setInterval(poll, 700);
if (token) { document.getElementById("setup").style.display = "none"; open({token, lang: config.lang}); }
else if (config.draft) { document.getElementById("setup").style.display = "none"; open({draft: config.draft, lang: config.lang}); }
