// Pure: busy/idle tracking from `$/progress` work-done notifications, and the status bar text.
// No `vscode` import.

export interface ServerStatus {
  model: string;
  busy: boolean;
  lastTraining: string | null;
}

export type Phase = 'starting' | 'running' | 'stopped' | 'missing' | 'error';

type Token = string | number;

interface WorkDoneValue {
  kind: 'begin' | 'report' | 'end';
  title?: string;
  message?: string;
  percentage?: number;
}

export interface Activity {
  title: string;
  message?: string;
  percentage?: number;
}

/** Counts the server's open work-done progress tokens (begin → report* → end). */
export class BusyTracker {
  private readonly active = new Map<Token, Activity>();
  private readonly listeners: Array<() => void> = [];

  onDidChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  handle(token: Token, value: WorkDoneValue): void {
    if (!value || typeof value !== 'object') return;
    if (value.kind === 'begin') {
      this.active.set(token, { title: value.title ?? '', message: value.message, percentage: value.percentage });
    } else if (value.kind === 'report') {
      const cur = this.active.get(token) ?? { title: '' };
      this.active.set(token, {
        title: cur.title,
        message: value.message ?? cur.message,
        percentage: value.percentage ?? cur.percentage,
      });
    } else if (value.kind === 'end') {
      this.active.delete(token);
    } else {
      return;
    }
    for (const l of this.listeners) l();
  }

  /** Forget everything (server stopped or restarted). */
  reset(): void {
    if (this.active.size === 0) return;
    this.active.clear();
    for (const l of this.listeners) l();
  }

  get busy(): boolean {
    return this.active.size > 0;
  }

  /** The most recently started activity still open. */
  get current(): Activity | undefined {
    let last: Activity | undefined;
    for (const a of this.active.values()) last = a;
    return last;
  }

  get count(): number {
    return this.active.size;
  }
}

export const DEFAULT_MODEL_NAME = 'SmolLM2-135M';

/** Short display name: `""` → SmolLM2-135M, paths/hf:// → file name without `.gguf`, URLs → host. */
export function shortModelName(model: string | undefined | null): string {
  const m = (model ?? '').trim();
  if (!m) return DEFAULT_MODEL_NAME;
  if (/^https?:\/\//i.test(m)) {
    try {
      const u = new URL(m);
      return u.host;
    } catch {
      return m;
    }
  }
  const base = m.replace(/[\\/]+$/, '').split(/[\\/]/).pop() ?? m;
  return base.replace(/\.gguf$/i, '') || m;
}

/** `2h ago`-style rendering of an ISO timestamp; other strings are shown as they are. */
export function formatLastTraining(last: string | null | undefined, now: Date = new Date()): string {
  if (!last) return 'never';
  const t = Date.parse(last);
  if (!/^\d{4}-\d{2}-\d{2}/.test(last) || Number.isNaN(t)) return last;
  const s = Math.round((now.getTime() - t) / 1000);
  if (s < 0) return last;
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export interface StatusView {
  text: string;
  tooltip: string;
}

function clip(s: string, n: number): string {
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
}

/** Status bar item text + tooltip, e.g. `ledex: SmolLM2-135M (idle)`. */
export function statusView(opts: {
  phase: Phase;
  status?: ServerStatus;
  modelSetting?: string;
  activity?: Activity;
  busy?: boolean;
  detail?: string;
  now?: Date;
}): StatusView {
  const model = opts.status?.model ? shortModelName(opts.status.model) : shortModelName(opts.modelSetting);
  const lastTraining = formatLastTraining(opts.status?.lastTraining ?? null, opts.now);
  const tooltipLines = [`ledex model: ${opts.status?.model || model}`, `Last training: ${lastTraining}`];
  let text: string;
  switch (opts.phase) {
    case 'starting':
      text = `$(sync~spin) ledex: ${model} (starting)`;
      break;
    case 'missing':
      text = `$(warning) ledex: not installed`;
      break;
    case 'error':
      text = `$(error) ledex: ${model} (error)`;
      break;
    case 'stopped':
      text = `$(circle-slash) ledex: ${model} (stopped)`;
      break;
    case 'running': {
      const busy = opts.busy || opts.status?.busy || false;
      if (!busy) {
        text = `ledex: ${model} (idle)`;
        break;
      }
      const a = opts.activity;
      const parts = [a?.title?.replace(/^ledex:\s*/i, ''), a?.message].filter((x): x is string => !!x && x.trim().length > 0);
      const pct = typeof a?.percentage === 'number' ? ` ${Math.round(a.percentage)}%` : '';
      const what = parts.length ? `: ${clip(parts.join(' – '), 40)}` : '';
      text = `$(sync~spin) ledex: ${model} (busy${what}${pct})`;
      if (a) tooltipLines.push(`Working: ${[a.title, a.message].filter(Boolean).join(' – ')}${pct}`);
      break;
    }
  }
  if (opts.detail) tooltipLines.push(opts.detail);
  tooltipLines.push('Click for ledex commands');
  return { text, tooltip: tooltipLines.join('\n') };
}

/** Parses the result of the server's `ledex.status` command defensively. */
export function parseServerStatus(raw: unknown): ServerStatus | undefined {
  if (!raw || typeof raw !== 'object') return undefined;
  const r = raw as Record<string, unknown>;
  return {
    model: typeof r.model === 'string' ? r.model : '',
    busy: r.busy === true,
    lastTraining: typeof r.lastTraining === 'string' ? r.lastTraining : null,
  };
}
