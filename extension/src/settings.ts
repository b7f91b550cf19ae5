// Pure: VS Code settings (declared once, in package.json) -> what the server receives.
// No `vscode` import so it can be unit-tested under plain node.
import pkg from '../package.json';

export const SECTION = 'ledex';

/** Settings only the extension uses; never sent to the server. */
export const EXTENSION_ONLY_KEYS: readonly string[] = ['pythonPath'];

interface PropertySchema {
  type: 'string' | 'integer' | 'number' | 'boolean' | 'array';
  default: unknown;
  minimum?: number;
  maximum?: number;
}

const PROPERTIES = pkg.contributes.configuration.properties as Record<string, PropertySchema>;

/** The `ledex.*` settings declared in package.json, keyed without the prefix. */
export function declaredSettings(): Record<string, PropertySchema> {
  const out: Record<string, PropertySchema> = {};
  for (const [full, schema] of Object.entries(PROPERTIES)) {
    if (full.startsWith(SECTION + '.')) out[full.slice(SECTION.length + 1)] = schema;
  }
  return out;
}

/** Keys the server gets, in declaration order: model, adapter, testCommand, junitGlobs, samples, rounds, runOnSave, search, searchSeconds. */
export function serverKeys(): string[] {
  return Object.keys(declaredSettings()).filter((k) => !EXTENSION_ONLY_KEYS.includes(k));
}

export interface LedexSettings {
  model: string;
  adapter: string;
  testCommand: string;
  junitGlobs: string[];
  samples: number;
  rounds: number;
  runOnSave: boolean;
  search: boolean;
  searchSeconds: number;
}

/** Reads one setting, e.g. `(key) => vscode.workspace.getConfiguration('ledex').get(key)`. */
export type SettingGetter = (key: string) => unknown;

function coerce(value: unknown, schema: PropertySchema): unknown {
  switch (schema.type) {
    case 'string':
      return typeof value === 'string' ? value.trim() : schema.default;
    case 'boolean':
      return typeof value === 'boolean' ? value : schema.default;
    case 'integer':
    case 'number': {
      const n = typeof value === 'number' ? value : typeof value === 'string' && value.trim() ? Number(value) : NaN;
      if (!Number.isFinite(n)) return schema.default;
      let i = schema.type === 'integer' ? Math.round(n) : n;
      if (schema.minimum !== undefined) i = Math.max(schema.minimum, i);
      if (schema.maximum !== undefined) i = Math.min(schema.maximum, i);
      return i;
    }
    case 'array':
      return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string' && v.length > 0) : schema.default;
  }
}

/** Settings as sent to the server: keys without the `ledex.` prefix, invalid values replaced by defaults. */
export function serverSettings(get: SettingGetter): LedexSettings {
  const decl = declaredSettings();
  const out: Record<string, unknown> = {};
  for (const key of serverKeys()) out[key] = coerce(get(key), decl[key]);
  return out as unknown as LedexSettings;
}

/** `initializationOptions` of the `initialize` request. */
export function initializationOptions(get: SettingGetter): LedexSettings {
  return serverSettings(get);
}

/** Params of `workspace/didChangeConfiguration`: `{ settings: { ledex: {...} } }`. */
export function didChangeConfigurationParams(get: SettingGetter): { settings: { ledex: LedexSettings } } {
  return { settings: { ledex: serverSettings(get) } };
}

export type ConfigChange = 'none' | 'restart' | 'notify';

/** What a configuration change means for the running server. */
export function classifyConfigChange(affects: (section: string) => boolean): ConfigChange {
  if (!affects(SECTION)) return 'none';
  if (EXTENSION_ONLY_KEYS.some((k) => affects(`${SECTION}.${k}`))) return 'restart';
  return 'notify';
}
