// Part of .ci/browser, driving the headless Chromium at CDP_PORT over the DevTools protocol:
// 1. the REST explorer's "try it out" runs a command with the development token that `keel up`
//    put in its Authorize box (201 for a new project of the demo tenant, whose owner it acts as);
// 2. a subscription run from GraphiQL's own editor, with a tenant owner's token typed into the
//    headers editor, shows the dashboard that a command then changes.
// Usage: node browser-interact.mjs BASE OWNER_TOKEN PROJECT_ID
const [base, owner, project] = process.argv.slice(2);
const cdpPort = process.env.CDP_PORT;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fail = (why) => { console.error("browser: FAIL: " + why); process.exit(1); };

const pages = await (await fetch(`http://127.0.0.1:${cdpPort}/json/list`)).json();
const page = pages.find((p) => p.type === "page") ?? fail("no page in Chromium");
const ws = new WebSocket(page.webSocketDebuggerUrl);
await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
let next = 0;
const waiting = new Map();
ws.onmessage = (m) => {
  const d = JSON.parse(m.data);
  if (d.id && waiting.has(d.id)) { waiting.get(d.id)(d); waiting.delete(d.id); }
};
const cdp = (method, params = {}) => new Promise((r) => { next += 1; waiting.set(next, r); ws.send(JSON.stringify({ id: next, method, params })); });
const evaluate = async (expression) =>
  (await cdp("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true })).result?.result?.value;
const until = async (expression, what) => {
  for (let i = 0; i < 40; i++) {
    if (await evaluate(expression)) return;
    await sleep(250);
  }
  fail(what);
};

await cdp("Page.navigate", { url: `${base}/api/v1/docs#/projects/createProject` });
await until(`!!document.querySelector('#operations-projects-createProject .execute')`, "the explorer has no Execute button");
// The example body creates a project in the tenant the development token acts in.
await evaluate(`document.querySelector('#operations-projects-createProject .execute').click()`);
const answered = `document.querySelector('#operations-projects-createProject .responses-wrapper')?.innerText ?? ''`;
await until(
  `/Server response\\s+Code\\s+Details\\s+201/.test(${answered})`,
  "the explorer's try-it-out did not create a project: " + JSON.stringify(await evaluate(answered)),
);
console.log("browser: the explorer's try-it-out ran a command with the development token (201)");

await cdp("Page.navigate", { url: `${base}/graphql` });
await until(`!!document.querySelector('.graphiql-query-editor .CodeMirror')`, "GraphiQL's editor did not appear");
const query = "subscription { dashboardChanged { tasksByStatus { todo } } }";
const typed = await evaluate(`(() => {
  document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(${JSON.stringify(query)});
  const headers = [...document.querySelectorAll('.graphiql-editor-tool .CodeMirror')]
    .map((e) => e.CodeMirror).find((c) => c.getValue().includes('Authorization'));
  if (!headers) return false;
  headers.setValue(JSON.stringify({ Authorization: ${JSON.stringify("Bearer " + owner)} }));
  return true;
})()`);
typed || fail("GraphiQL's headers editor does not hold the development token");
await sleep(500);
await evaluate(`document.querySelector('.graphiql-execute-button').click()`);
await sleep(1500);
const r = await fetch(`${base}/api/v1/projects/${project}/tasks`, {
  method: "POST",
  headers: { authorization: `Bearer ${owner}`, "content-type": "application/json" },
  body: JSON.stringify({ title: "Pushed to GraphiQL" }),
});
r.status === 201 || fail(`creating a task answered ${r.status}`);
await until(
  `(document.querySelector('.graphiql-response')?.innerText ?? '').includes('"todo": 1')`,
  "GraphiQL's subscription did not show the pushed dashboard: " +
    JSON.stringify(await evaluate(`document.querySelector('.graphiql-response')?.innerText`)),
);
console.log("browser: a subscription from GraphiQL received the pushed dashboard");
ws.close();
process.exit(0);
