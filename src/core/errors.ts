/**
 * Every error the product raises carries a stable `code` (`E_...`): it extends CodedError.
 * Messages say what happened and what to do, one sentence each. Only src/cli/main.ts maps
 * codes to exit codes; an error reaching it that is not a CodedError is a bug.
 */
export class CodedError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'CodedError';
  }
}

/** Usage, validation, journal and run-level errors (TransportError, its sibling, is about one host's connection). */
export class RunbookError extends CodedError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'RunbookError';
  }
}

/** One problem found while validating input (runbook, inventory, variables, options). */
export interface ValidationIssue {
  file?: string;
  /** Path inside the document, e.g. `steps[3].verify.retries`. */
  path?: string;
  line?: number;
  column?: number;
  message: string;
}

export function formatIssue(i: ValidationIssue): string {
  let where = i.file ?? '';
  if (i.line !== undefined) where += `:${i.line}${i.column !== undefined ? `:${i.column}` : ''}`;
  const at = i.path ? `${where ? ' ' : ''}${i.path}` : '';
  const prefix = where || at ? `${where}${at}: ` : '';
  return `${prefix}${i.message}`;
}

/** Input was invalid; nothing was contacted. Holds every problem found, not just the first. */
export class ValidationError extends RunbookError {
  readonly issues: ValidationIssue[];
  constructor(issues: ValidationIssue[], code = 'E_VALIDATION') {
    super(code, issues.map(formatIssue).join('\n'));
    this.issues = issues;
    this.name = 'ValidationError';
  }
}

/** Levenshtein-based suggestion for "did you mean". */
export function didYouMean(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0];
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j];
      dp[j] = Math.min(dp[j] + 1, dp[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length];
}
