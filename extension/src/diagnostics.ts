// Pure: picking ledex's diagnostics and the failure id they carry. No `vscode` import.

export interface DiagnosticLike {
  source?: string;
  message: string;
  code?: unknown;
  /** LSP `Diagnostic.data`, kept by vscode-languageclient on its ProtocolDiagnostic. */
  data?: unknown;
  range: { start: { line: number }; end: { line: number } };
}

export function isLedexDiagnostic(d: DiagnosticLike): boolean {
  return typeof d.source === 'string' && d.source.toLowerCase().startsWith('ledex');
}

// The server's data is `{test, state, episode, verified, role}`; `test` is what ledex.explain/dismiss take.
const ID_KEYS = ['test', 'failureId', 'failure_id', 'failure', 'id'];

/** The failure id for `ledex.explain` / `ledex.dismiss`: from `data` (test / failureId / id), else the diagnostic code. */
export function failureIdOf(d: DiagnosticLike): string | undefined {
  const data = d.data;
  if (typeof data === 'string' && data) return data;
  if (data && typeof data === 'object') {
    for (const k of ID_KEYS) {
      const v = (data as Record<string, unknown>)[k];
      if (typeof v === 'string' && v) return v;
      if (typeof v === 'number') return String(v);
    }
  }
  if (data && typeof data === 'object') return undefined; // the code is a role ("test"/"suspect"), not an id
  const code = d.code;
  if (typeof code === 'string' && code) return code;
  if (code && typeof code === 'object' && 'value' in code) {
    const v = (code as { value: unknown }).value;
    if (typeof v === 'string' || typeof v === 'number') return String(v);
  }
  return undefined;
}

/** ledex diagnostics, those on the cursor line first, then by distance from it. */
export function rankForLine<T extends DiagnosticLike>(diags: readonly T[], line: number | undefined): T[] {
  const mine = diags.filter(isLedexDiagnostic);
  if (line === undefined) return mine;
  const dist = (d: T) => (line >= d.range.start.line && line <= d.range.end.line ? 0 : Math.min(Math.abs(line - d.range.start.line), Math.abs(line - d.range.end.line)));
  return [...mine].sort((a, b) => dist(a) - dist(b));
}

/** True when a `window/showDocument` target is a markdown file (shown as a preview). */
export function isMarkdownTarget(uri: string): boolean {
  return /\.(md|markdown)$/i.test(uri.split(/[?#]/)[0]);
}
