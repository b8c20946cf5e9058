// Validates Kubernetes manifests beyond "the YAML parses" (scripts/check-k8s.sh runs it):
//
//   node check-k8s.mjs --version X.Y.Z PATH...     (files, or folders searched for *.yaml)
//
// 1. Schema: every object against the Kubernetes OpenAPI schema of its kind (kubernetes-models;
//    ServiceMonitor from @kubernetes-models/prometheus-operator; LeaderWorkerSet's pod templates
//    as core PodTemplateSpecs), and every object as a TypeScript literal of its kind's type,
//    which the compiler rejects for a field the kind does not have (the schemas allow any).
// 2. The "restricted" Pod Security Standard, on every pod template.
// 3. Guaranteed QoS: cpu and memory (and nvidia.com/gpu where used) requested equal to limits
//    on every container.
// 4. Operations: images pinned (dsv3-serve at the release X.Y.Z), serving containers (a port
//    named grpc) with startup, readiness and a different liveness probe, a termination grace
//    longer than preStop + --grace-period-s, and every PVC, pod selector and port that one
//    object names defined by another.
// Prints one line per problem and exits 1 if there is any.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const problems = [];
const problem = (where, message) => problems.push(`${where}: ${message}`);

function parseArgs(argv) {
  const out = { version: null, paths: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--version") out.version = argv[++i];
    else out.paths.push(argv[i]);
  }
  if (!out.version || out.paths.length === 0) {
    console.error("usage: check-k8s.mjs --version X.Y.Z PATH...");
    process.exit(2);
  }
  return out;
}

function yamlFiles(p) {
  if (fs.statSync(p).isFile()) return [p];
  return fs.readdirSync(p, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(p, e.name);
    if (e.isDirectory()) return yamlFiles(full);
    return /\.ya?ml$/.test(e.name) ? [full] : [];
  }).sort();
}

// Every Kubernetes object of the files, as {where, doc}; other YAML (a Prometheus config) has
// no apiVersion and kind, and is left to its own tools.
function loadObjects(files) {
  const objects = [];
  for (const file of files) {
    const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
    docs.forEach((d, i) => {
      if (d.errors.length) return problem(`${file}#${i}`, `YAML: ${d.errors[0].message}`);
      const doc = d.toJS();
      if (doc === null || !(doc.apiVersion || doc.kind)) return;
      const shown = path.relative(process.cwd(), file);
      const where = `${shown.startsWith("..") ? file : shown} ${doc.kind}/${doc.metadata?.name}`;
      objects.push({ where, doc });
    });
  }
  return objects;
}

const LWS = "leaderworkerset.x-k8s.io/v1";
const CRD_PACKAGES = { "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator" };

function typeModule(apiVersion, kind) {
  if (apiVersion === LWS) return null;
  return `${CRD_PACKAGES[apiVersion] ?? "kubernetes-models"}/${apiVersion}/${kind}`;
}

async function checkSchemas(objects) {
  const { PodTemplateSpec } = await import("kubernetes-models/v1/PodTemplateSpec");
  for (const { where, doc } of objects) {
    const templates = [];
    if (doc.apiVersion === LWS) {
      const t = doc.spec?.leaderWorkerTemplate ?? {};
      for (const [name, spec] of Object.entries(t)) {
        if (name.endsWith("Template")) templates.push([name, spec]);
      }
    } else {
      let Model;
      try {
        Model = (await import(typeModule(doc.apiVersion, doc.kind)))[doc.kind];
      } catch {
        problem(where, `no schema for ${doc.apiVersion} ${doc.kind}`);
        continue;
      }
      templates.push(["", doc, Model]);
    }
    for (const [name, data, Model = PodTemplateSpec] of templates) {
      try {
        new Model(data).validate();
      } catch (e) {
        problem(where, `schema${name ? ` of ${name}` : ""}: ${e.message}`);
      }
    }
  }
}

// One TypeScript statement per object, typed with its kind's interface; tsc --strict reports
// fields the type lacks, wrong value types and missing required fields.
function checkTypes(objects) {
  const dir = fs.mkdtempSync(path.join(here, ".types-"));
  try {
    const lines = [`import type { ILeaderWorkerSet } from "../lws.js";`];
    const owner = [];
    objects.forEach(({ where, doc }, i) => {
      const module = typeModule(doc.apiVersion, doc.kind);
      const type = module ? `import("${module}").I${doc.kind}` : "ILeaderWorkerSet";
      const body = `export const object${i}: ${type} = ${JSON.stringify(doc, null, 2)};`;
      for (const _ of body.split("\n")) owner.push(where);
      lines.push(body);
    });
    fs.writeFileSync(path.join(dir, "manifests.ts"), lines.join("\n") + "\n");
    const tsc = path.join(here, "node_modules/typescript/bin/tsc");
    try {
      execFileSync(process.execPath, [tsc, "--noEmit", "--strict", "--skipLibCheck",
        "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext",
        path.join(dir, "manifests.ts")], { encoding: "utf8", stdio: "pipe" });
    } catch (e) {
      const text = `${e.stdout}${e.stderr}`;
      const found = [...text.matchAll(/manifests\.ts\((\d+),\d+\): error TS\d+: (.*)/g)];
      if (found.length === 0) problem("tsc", text.trim() || e.message);
      for (const [, line, message] of found) {
        // Line 1 is the import; object lines follow in order.
        problem(owner[Number(line) - 2] ?? "manifests.ts", `type: ${message}`);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// [name, pod template] of every workload.
function podTemplates(doc) {
  if (doc.apiVersion === LWS) {
    const t = doc.spec?.leaderWorkerTemplate ?? {};
    return ["leaderTemplate", "workerTemplate"].filter((n) => t[n]).map((n) => [n, t[n]]);
  }
  if (doc.kind === "Pod") return [["pod", { metadata: doc.metadata, spec: doc.spec }]];
  if (doc.spec?.template?.spec) return [["template", doc.spec.template]];
  if (doc.spec?.jobTemplate?.spec?.template) return [["template", doc.spec.jobTemplate.spec.template]];
  return [];
}

const containersOf = (spec) => [...(spec.initContainers ?? []), ...(spec.containers ?? []),
  ...(spec.ephemeralContainers ?? [])];

// https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline + restricted).
const RESTRICTED_VOLUMES = new Set(["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
  "persistentVolumeClaim", "projected", "secret"]);
const SAFE_SYSCTLS = new Set(["kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
  "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
  "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
  "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"]);

function checkRestricted(where, spec) {
  const pod = spec.securityContext ?? {};
  for (const host of ["hostNetwork", "hostPID", "hostIPC"]) {
    if (spec[host]) problem(where, `${host} is forbidden`);
  }
  for (const v of spec.volumes ?? []) {
    const type = Object.keys(v).find((k) => k !== "name");
    if (!RESTRICTED_VOLUMES.has(type)) problem(where, `volume ${v.name}: ${type} is forbidden`);
  }
  for (const s of pod.sysctls ?? []) {
    if (!SAFE_SYSCTLS.has(s.name)) problem(where, `sysctl ${s.name} is forbidden`);
  }
  const podSeccomp = pod.seccompProfile?.type;
  for (const c of containersOf(spec)) {
    const at = `${where} container ${c.name}`;
    const sc = c.securityContext ?? {};
    if (sc.privileged) problem(at, "privileged is forbidden");
    if (sc.allowPrivilegeEscalation !== false) problem(at, "allowPrivilegeEscalation must be false");
    if ((sc.runAsNonRoot ?? pod.runAsNonRoot) !== true) problem(at, "runAsNonRoot must be true");
    if ((sc.runAsUser ?? pod.runAsUser) === 0) problem(at, "runAsUser 0 is forbidden");
    const seccomp = sc.seccompProfile?.type ?? podSeccomp;
    if (seccomp !== "RuntimeDefault" && seccomp !== "Localhost") {
      problem(at, "seccompProfile.type must be RuntimeDefault or Localhost");
    }
    if (!(sc.capabilities?.drop ?? []).includes("ALL")) problem(at, "capabilities must drop ALL");
    for (const cap of sc.capabilities?.add ?? []) {
      if (cap !== "NET_BIND_SERVICE") problem(at, `capability ${cap} may not be added`);
    }
    if (sc.procMount && sc.procMount !== "Default") problem(at, "procMount must be Default");
    for (const p of c.ports ?? []) {
      if (p.hostPort) problem(at, `hostPort ${p.hostPort} is forbidden`);
    }
    if (["Unconfined"].includes(sc.appArmorProfile?.type)) problem(at, "AppArmor Unconfined");
  }
}

function checkGuaranteed(where, spec) {
  for (const c of containersOf(spec)) {
    const { requests = {}, limits = {} } = c.resources ?? {};
    for (const r of new Set(["cpu", "memory", ...Object.keys(requests), ...Object.keys(limits)])) {
      if (limits[r] === undefined || String(requests[r]) !== String(limits[r])) {
        problem(`${where} container ${c.name}`, `${r}: requests (${requests[r]}) must equal ` +
          `limits (${limits[r]}) for Guaranteed QoS`);
      }
    }
  }
}

// --flag=value or --flag value in a container's command line, shell or not.
function flagValue(c, flag) {
  const text = [...(c.command ?? []), ...(c.args ?? [])].join(" ");
  const m = text.match(new RegExp(`${flag}[= ]([^\\s]+)`));
  return m ? m[1] : null;
}

function checkOperations(where, template, version) {
  const spec = template.spec;
  for (const c of containersOf(spec)) {
    const at = `${where} container ${c.name}`;
    const image = c.image ?? "";
    const tag = image.includes("@") ? "digest" : image.split("/").pop().split(":")[1];
    if (!tag || tag === "latest") problem(at, `image ${image} must be pinned, not latest`);
    if (image.split("/").pop().startsWith("dsv3-serve:") && tag !== version) {
      problem(at, `image ${image}: dsv3-serve is at release ${version}`);
    }
    if (c.imagePullPolicy !== "IfNotPresent") problem(at, "imagePullPolicy must be IfNotPresent");
    if (!(c.ports ?? []).some((p) => p.name === "grpc")) continue;
    // A serving container.
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      if (!c[probe]) problem(at, `no ${probe}`);
    }
    const action = (p) => JSON.stringify({ ...p, periodSeconds: 0, timeoutSeconds: 0,
      failureThreshold: 0, successThreshold: 0, initialDelaySeconds: 0 });
    if (c.livenessProbe && c.readinessProbe && action(c.livenessProbe) === action(c.readinessProbe)) {
      problem(at, "livenessProbe checks what readinessProbe checks: a draining server would be killed");
    }
    const drain = Number(flagValue(c, "--grace-period-s") ?? 30) +
      Number(c.lifecycle?.preStop?.sleep?.seconds ?? 0);
    const grace = spec.terminationGracePeriodSeconds ?? 30;
    if (grace <= drain) {
      problem(at, `terminationGracePeriodSeconds ${grace} must exceed preStop + ` +
        `--grace-period-s (${drain})`);
    }
  }
}

const matches = (selector, labels) =>
  Object.entries(selector ?? {}).every(([k, v]) => (labels ?? {})[k] === v);

function checkReferences(objects) {
  const pvcs = new Set(objects.filter((o) => o.doc.kind === "PersistentVolumeClaim")
    .map((o) => o.doc.metadata.name));
  const pods = objects.flatMap((o) => podTemplates(o.doc).map(([, t]) => t));
  const services = objects.filter((o) => o.doc.kind === "Service").map((o) => o.doc);
  for (const { where, doc } of objects) {
    for (const [, t] of podTemplates(doc)) {
      for (const v of t.spec.volumes ?? []) {
        const claim = v.persistentVolumeClaim?.claimName;
        if (claim && !pvcs.has(claim)) problem(where, `PersistentVolumeClaim ${claim} is not defined`);
      }
    }
    const selector = doc.kind === "Service" ? doc.spec?.selector
      : ["PodDisruptionBudget"].includes(doc.kind) ? doc.spec?.selector?.matchLabels : null;
    if (selector && !pods.some((t) => matches(selector, t.metadata?.labels))) {
      problem(where, `selector ${JSON.stringify(selector)} matches no pod template`);
    }
    if (doc.kind === "Service") {
      for (const p of doc.spec?.ports ?? []) {
        const target = p.targetPort ?? p.port;
        const ok = pods.filter((t) => matches(doc.spec.selector, t.metadata?.labels)).some((t) =>
          containersOf(t.spec).some((c) => (c.ports ?? []).some((cp) =>
            cp.name === target || cp.containerPort === target)));
        if (!ok) problem(where, `port ${p.name}: no selected container has port ${target}`);
      }
    }
    if (doc.kind === "ServiceMonitor") {
      const selected = services.filter((s) => matches(doc.spec?.selector?.matchLabels, s.metadata?.labels));
      if (selected.length === 0) problem(where, "selector matches no Service");
      for (const e of doc.spec?.endpoints ?? []) {
        if (!selected.every((s) => (s.spec?.ports ?? []).some((p) => p.name === e.port))) {
          problem(where, `endpoint port ${e.port} is not a named port of every selected Service`);
        }
      }
    }
  }
}

const { version, paths } = parseArgs(process.argv.slice(2));
const objects = loadObjects(paths.flatMap(yamlFiles));
if (objects.length === 0) problem(paths.join(" "), "no Kubernetes objects");
await checkSchemas(objects);
checkTypes(objects);
for (const { where, doc } of objects) {
  for (const [name, template] of podTemplates(doc)) {
    const at = `${where} ${name}`;
    checkRestricted(at, template.spec ?? {});
    checkGuaranteed(at, template.spec ?? {});
    checkOperations(at, template, version);
  }
}
checkReferences(objects);
for (const p of problems) console.error(`check-k8s: ${p}`);
if (problems.length) process.exit(1);
console.log(`check-k8s: ${objects.length} objects valid (schema, types, restricted, ` +
  "Guaranteed QoS, probes, references)");
