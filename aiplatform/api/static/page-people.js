// The People page: who am I, a user's API keys (a new key's secret shown once), the chosen
// project's members (managed by its maintainers) and its quota (read by its members, set by platform
// admins), and for platform admins the projects (create,
// rename, delete), the users and the audit log. #people shows the caller's own keys (an admin's: the users
// and the log); #people/NAME, a user's keys (an admin's view of anyone's).

import { api, currentProject } from "./api.js";
import { act, cursorPager, fmtTime, h, notify, page } from "./dom.js";
import { refreshProjects } from "./projects.js";
import { route } from "./router.js";

const ROLES = ["viewer", "member", "maintainer", "admin"];
const AUDIT_PER_PAGE = 25;
const ACTIONS = ["read", "infer", "create", "manage", "administer", "own_keys", "identify"];
const OUTCOMES = ["ok", "failed", "denied"];
const enc = encodeURIComponent;
const field = (label, input) => h("label", {}, h("span", { class: "name" }, label), input);
const rolesText = (roles) => Object.entries(roles || {}).map(([project, role]) => `${role} in ${project}`).join(", ") || "no role";

// The header's "signed in as": the caller's name and roles, from /v1/whoami.
export async function refreshIdentity() {
  const where = document.getElementById("whoami");
  let me;
  try { me = await api("GET", "/v1/whoami"); } catch (_) { where.textContent = ""; return; }
  const what = me.platform_admin ? "platform admin" : me.kind === "service" ? `service key for ${(me.models || []).join(", ")}` : rolesText(me.roles);
  where.replaceChildren("Signed in as ", h("strong", {}, me.name), ` (${what})`);
}

export async function peoplePage(selected) {
  const root = page();
  const me = await api("GET", "/v1/whoami");
  const owner = selected || (me.kind === "user" ? me.name : null);
  root.replaceChildren(h("h2", {}, "People"),
    h("p", { id: "people-me" }, "Signed in as ", h("strong", {}, me.name),
      ` (${me.platform_admin ? "platform admin" : rolesText(me.roles)})${me.key_id ? ` with key ${me.key_id}` : ""}`));
  if (owner) root.append(await keysPanel(owner, me));
  else root.append(h("section", { class: "card" }, h("p", { class: "muted" },
    "The operator's token has no keys of its own: pick a user below to manage theirs.")));
  const project = currentProject() || me.project || "default";
  const manages = me.platform_admin || ["maintainer", "admin"].includes((me.roles || {})[project]);
  if (manages) root.append(await membersPanel(project, me));
  if (me.platform_admin || (me.roles || {})[project]) root.append(await quotaPanel(project, me.platform_admin));
  if (me.platform_admin) root.append(await projectsPanel(), await usersPanel(), auditPanel());
}

// The chosen project's members: its maintainers add them, change their roles (up to their own)
// and remove them; the platform answers a refusal with the reason.
async function membersPanel(project, me) {
  const { members } = await api("GET", `/v1/projects/${enc(project)}/members`);
  const path = (user) => `/v1/projects/${enc(project)}/members/${enc(user)}`;
  const roleSelect = (attrs, chosen) => h("select", attrs, ROLES.map((r) => h("option", { value: r, selected: r === chosen }, r)));
  const user = h("input", { id: "member-user", placeholder: "alice", required: true, maxlength: 64 });
  const role = roleSelect({ id: "member-role" }, "member");
  const form = h("form", { id: "member-form", onsubmit: (e) => {
    e.preventDefault();
    act(e.submitter, async () => {
      await api("PUT", path(user.value.trim()), { role: role.value });
      notify(`${user.value.trim()} is a ${role.value} of ${project}`);
      await route();
    });
  } }, h("div", { class: "row" }, field("User", user), field("Role", role),
    h("button", { type: "submit", class: "primary", id: "member-add" }, "Add member")));
  return h("section", { class: "card", id: "members" }, h("h3", {}, `Members of ${project}`),
    h("table", { id: "member-table" },
      h("thead", {}, h("tr", {}, ["User", "Role", "Granted", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, members.map((m) => h("tr", { "data-member": m.user },
        h("td", {}, m.user),
        h("td", {}, roleSelect({ class: "member-role", "aria-label": `Role of ${m.user}`, onchange: (e) => act(null, async () => {
          await api("PUT", path(m.user), { role: e.target.value });
          notify(`${m.user} is a ${e.target.value} of ${project}`);
          await route();
        }) }, m.role)),
        h("td", {}, `${fmtTime(m.granted_at)} by ${m.granted_by}`),
        h("td", {}, m.user === me.name ? "" : h("button", { class: "member-remove", "aria-label": `Remove ${m.user}`, onclick: (e) => act(e.target, async () => {
          await api("DELETE", path(m.user));
          notify(`${m.user} removed from ${project}`);
          await route();
        }) }, "Remove")))))),
    members.length ? "" : h("p", { class: "muted" }, "No members yet."),
    h("h3", {}, "Add a member"), form);
}

// The chosen project's quota: null is unlimited. Its members read it; platform admins edit and
// save it, and the platform's refusal (a bad value, a quota below what running tasks hold) is
// shown in the panel, beside the fields it is about.
const QUOTA_FIELDS = [["cpus", "CPUs"], ["gpus", "GPUs"], ["queued", "Queued tasks"], ["replicas", "Serving replicas"], ["weight", "Weight"]];
async function quotaPanel(project, admin) {
  const path = `/v1/projects/${enc(project)}/quota`;
  const section = h("section", { class: "card", id: "quota" });
  const shown = (value) => (value === null || value === undefined ? "unlimited" : String(value));
  const inUse = (q) => h("p", { id: "quota-in-use", class: "muted" },
    `In use now: ${q.in_use.cpus} CPUs, ${q.in_use.gpus} GPUs, ${q.in_use.queued} queued tasks` +
    (q.in_use.replicas === undefined ? "" : `, ${q.in_use.replicas} serving replicas of its own`));
  const quota = await api("GET", path);
  if (!admin) {
    section.append(h("h3", {}, `Quota of ${project}`),
      h("table", { id: "quota-table" }, h("tbody", {}, QUOTA_FIELDS.map(([key, label]) =>
        h("tr", { "data-quota": key }, h("th", { scope: "row" }, label), h("td", {}, shown(quota[key])))))),
      inUse(quota));
    return section;
  }
  const inputs = Object.fromEntries(QUOTA_FIELDS.map(([key]) => [key, h("input", {
    id: `quota-${key}`, type: "text", inputmode: "decimal", size: 8, placeholder: key === "weight" ? "1" : "unlimited" })]));
  const error = h("p", { id: "quota-error", class: "refused", role: "alert", hidden: true });
  const usage = h("div", {});
  const fill = (q) => {
    for (const [key] of QUOTA_FIELDS) inputs[key].value = q[key] === null || q[key] === undefined ? "" : String(q[key]);
    usage.replaceChildren(inUse(q));
  };
  // an empty field is unlimited (weight: 1); anything else goes as typed, a number when it is one,
  // so the platform judges it and says what is wrong
  const value = (text) => (text === "" ? null : Number.isFinite(Number(text)) ? Number(text) : text);
  const form = h("form", { id: "quota-form", onsubmit: async (e) => {
    e.preventDefault();
    const button = e.submitter;
    error.hidden = true;
    button.disabled = true;
    try {
      const body = {};
      for (const [key] of QUOTA_FIELDS) {
        const v = value(inputs[key].value.trim());
        if (v !== null) body[key] = v;
      }
      fill(await api("PUT", path, body));
      notify(`Saved the quota of ${project}`);
    } catch (err) {
      error.textContent = err instanceof Error ? err.message : String(err);
      error.hidden = false;
    } finally { button.disabled = false; }
  } }, h("div", { class: "row" }, QUOTA_FIELDS.map(([key, label]) => field(label, inputs[key])),
    h("button", { type: "submit", class: "primary", id: "quota-save" }, "Save quota")));
  fill(quota);
  section.append(h("h3", {}, `Quota of ${project}`),
    h("p", { class: "muted" }, "An empty field is unlimited. A quota never stops a running task; queued ones wait for room. " +
      "Serving replicas give the project model servers of its own (empty: the shared ones; 0: its models are not served)."),
    form, error, usage);
  return section;
}

// Platform admins: every project; a new one, and renaming or deleting one that holds nothing
// (the platform names what a project still holds when it refuses).
async function projectsPanel() {
  const { projects } = await api("GET", "/v1/projects");
  const name = h("input", { id: "project-name", placeholder: "vision", required: true, pattern: "[a-z0-9][a-z0-9._-]*", maxlength: 64 });
  const form = h("form", { id: "project-form", onsubmit: (e) => {
    e.preventDefault();
    act(e.submitter, async () => {
      const made = await api("POST", "/v1/projects", { name: name.value.trim() });
      notify(`Made project ${made.name}`);
      await refreshProjects();
      await route();
    });
  } }, h("div", { class: "row" }, field("Name", name), h("button", { type: "submit", class: "primary", id: "project-create" }, "Create project")));
  const row = (p) => {
    const renamed = h("input", { class: "project-new-name", "aria-label": `New name of ${p.name}`, placeholder: "new name", maxlength: 64 });
    const fixed = p.name === "default";
    return h("tr", { "data-project": p.name },
      h("td", {}, p.name), h("td", {}, p.members.length), h("td", {}, `${fmtTime(p.created_at)} by ${p.created_by}`),
      h("td", {}, fixed ? "" : [renamed, h("button", { class: "project-rename", "aria-label": `Rename ${p.name}`, onclick: (e) => act(e.target, async () => {
        const done = await api("PATCH", `/v1/projects/${enc(p.name)}`, { name: renamed.value.trim() });
        notify(`Project ${p.name} is now ${done.name}`);
        await refreshProjects();
        await route();
      }) }, "Rename"), " ", h("button", { class: "project-delete", "aria-label": `Delete ${p.name}`, onclick: (e) => act(e.target, async () => {
        await api("DELETE", `/v1/projects/${enc(p.name)}`);
        notify(`Deleted project ${p.name}`);
        await refreshProjects();
        await route();
      }) }, "Delete")]));
  };
  return h("section", { class: "card", id: "projects" }, h("h3", {}, "Projects"),
    h("table", { id: "project-table" },
      h("thead", {}, h("tr", {}, ["Project", "Members", "Created", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, projects.map(row))),
    h("h3", {}, "New project"), form);
}

async function usersPanel() {
  const { users } = await api("GET", "/v1/users");
  const name = h("input", { id: "user-name", placeholder: "alice", required: true, pattern: "[a-z0-9][a-z0-9._-]*", maxlength: 64 });
  const role = h("select", { id: "user-role" }, ROLES.map((r) => h("option", { value: r, selected: r === "member" }, r)));
  const admin = h("input", { type: "checkbox", id: "user-admin" });
  const form = h("form", { id: "user-form", onsubmit: (e) => {
    e.preventDefault();
    act(e.submitter, async () => {
      const made = await api("POST", "/v1/users", { name: name.value.trim(), role: role.value, platform_admin: admin.checked });
      notify(`Made user ${made.name}`);
      await route();  // the page again, as it is now
    });
  } }, h("div", { class: "row" }, field("Name", name), field("Role in default", role), field("Platform admin", admin),
    h("button", { type: "submit", class: "primary", id: "user-create" }, "Create user")));
  return h("section", { class: "card", id: "users" }, h("h3", {}, "Users"),
    h("table", { id: "user-table" },
      h("thead", {}, h("tr", {}, ["User", "Roles", "Live keys", "Created", "State", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, users.map((u) => h("tr", { "data-user": u.name },
        h("td", {}, h("a", { href: `#people/${enc(u.name)}` }, u.name), u.platform_admin ? h("span", { class: "muted" }, " (platform admin)") : ""),
        h("td", {}, rolesText(u.roles)), h("td", {}, u.live_keys), h("td", {}, `${fmtTime(u.created_at)} by ${u.created_by}`),
        h("td", { class: "user-state" }, u.disabled_at ? `disabled ${fmtTime(u.disabled_at)}` : "active"),
        h("td", {}, u.disabled_at ? "" : h("button", { class: "user-disable", "aria-label": `Disable ${u.name}`, onclick: (e) => act(e.target, async () => {
          await api("POST", `/v1/users/${enc(u.name)}/disable`);
          notify(`Disabled ${u.name}: their keys stopped working`);
          await route();  // the page again, as it is now
        }) }, "Disable")))))),
    users.length ? "" : h("p", { class: "muted" }, "No users yet: the operator's token is the platform admin."),
    h("h3", {}, "New user"), form);
}

async function keysPanel(user, me) {
  const section = h("section", { class: "card", id: "keys" });
  const secretBox = h("div", { id: "key-secret-box", role: "status" });
  const rows = h("tbody", { id: "key-rows" });
  const load = async () => {
    const { keys } = await api("GET", `/v1/users/${enc(user)}/keys`);
    rows.replaceChildren(...keys.map((k) => h("tr", { "data-key": k.id, "data-state": k.revoked_at ? "revoked" : "live" },
      h("td", {}, h("code", {}, k.id)), h("td", {}, k.name), h("td", {}, k.kind === "service" ? `service: ${(k.models || []).join(", ")}` : "user"),
      h("td", {}, fmtTime(k.created_at)), h("td", {}, k.expires_at ? fmtTime(k.expires_at) : "never"),
      h("td", {}, k.last_used_at ? fmtTime(k.last_used_at) : "never"),
      h("td", { class: "key-state" }, k.revoked_at ? `revoked ${fmtTime(k.revoked_at)}` : "live"),
      h("td", {}, k.revoked_at ? "" : h("button", { class: "key-revoke", "aria-label": `Revoke key ${k.name}`, onclick: (e) => act(e.target, async () => {
        await api("DELETE", `/v1/users/${enc(user)}/keys/${enc(k.id)}`);
        notify(`Revoked ${k.name}: it stopped working`);
        await load();
      }) }, "Revoke")))));
    if (!keys.length) rows.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No keys yet.")));
  };
  const name = h("input", { id: "key-name", placeholder: "laptop", required: true, maxlength: 64 });
  const days = h("input", { id: "key-days", type: "text", inputmode: "decimal", placeholder: "(never)", size: 8 });
  const form = h("form", { id: "key-form", onsubmit: (e) => {
    e.preventDefault();
    act(e.submitter, async () => {
      const body = { name: name.value.trim() };
      if (days.value.trim()) body.expires_in_days = Number(days.value.trim());
      const made = await api("POST", `/v1/users/${enc(user)}/keys`, body);
      name.value = ""; days.value = "";
      showSecret(secretBox, made);
      await load();
    });
  } }, h("div", { class: "row" }, field("Key name", name), field("Expires in days", days),
    h("button", { type: "submit", class: "primary", id: "key-create" }, "Create key")));
  section.append(h("h3", {}, user === me.name ? "Your API keys" : `API keys of ${user}`),
    h("table", { id: "key-table" },
      h("thead", {}, h("tr", {}, ["Id", "Name", "Kind", "Created", "Expires", "Last used", "State", ""].map((t) => h("th", {}, t)))), rows),
    h("h3", {}, "New key"), form, secretBox);
  await load();
  return section;
}

// The secret is in the answer that made the key and nowhere else: shown here once, until the page changes.
function showSecret(box, made) {
  const secret = h("code", { id: "key-secret" }, made.secret);
  const copy = h("button", { type: "button", id: "key-copy", onclick: () => act(copy, async () => {
    try { await navigator.clipboard.writeText(made.secret); notify("Copied the key's secret"); }
    catch (_) { getSelection().selectAllChildren(secret); notify("Select and copy it by hand: the browser refused the clipboard"); }
  }) }, "Copy");
  box.replaceChildren(h("div", { class: "secret" },
    h("p", {}, h("strong", {}, `Key ${made.name} (${made.id}): `), "copy its secret now. It is shown this once; the platform keeps only its digest."),
    h("div", { class: "row" }, secret, copy)));
}

function auditPanel() {
  const principal = h("input", { id: "audit-principal", placeholder: "anyone", maxlength: 64 });
  const action = h("select", { id: "audit-action" }, h("option", { value: "" }, "any"), ACTIONS.map((a) => h("option", { value: a }, a)));
  const outcome = h("select", { id: "audit-outcome" }, h("option", { value: "" }, "any"), OUTCOMES.map((o) => h("option", { value: o }, o)));
  const rows = h("tbody", { id: "audit-rows" });
  const pager = cursorPager("audit", async (before) => {
    const query = new URLSearchParams({ limit: AUDIT_PER_PAGE });
    for (const [key, input] of [["principal", principal], ["action", action], ["outcome", outcome]]) if (input.value.trim()) query.set(key, input.value.trim());
    if (before) query.set("before", before);
    const { entries, next_before: next } = await api("GET", `/v1/audit?${query}`);
    rows.replaceChildren(...entries.map((e) => h("tr", { "data-seq": e.seq, "data-outcome": e.outcome },
      h("td", {}, fmtTime(e.at)), h("td", {}, e.principal, e.key_id ? h("span", { class: "muted" }, ` (${e.key_id})`) : ""),
      h("td", {}, e.action), h("td", {}, e.method), h("td", {}, h("code", {}, e.resource)), h("td", {}, e.project),
      h("td", { class: `outcome-${e.outcome}` }, `${e.outcome} ${e.status}`), h("td", {}, e.address || "–"))));
    if (!entries.length) rows.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "Nothing recorded matches.")));
    return next;
  });
  const form = h("form", { id: "audit-form", onsubmit: (e) => { e.preventDefault(); act(e.submitter, () => pager.reset()); } },
    h("div", { class: "row" }, field("Who", principal), field("Action", action), field("Outcome", outcome),
      h("button", { type: "submit", id: "audit-filter" }, "Filter")));
  const section = h("section", { class: "card", id: "audit" }, h("h3", {}, "Audit log"), form,
    h("table", { id: "audit-table" },
      h("thead", {}, h("tr", {}, ["When", "Who", "Action", "Method", "Resource", "Project", "Outcome", "From"].map((t) => h("th", {}, t)))), rows),
    pager.element);
  act(null, () => pager.reset());
  return section;
}
